"""The phantom's DICOM series: the tags of each CT and PET series and the series files.

:mod:`petctiqa.phantom` draws a study (patient, timing, image grids, voxel values); this module
turns it into the two series of an FDG PET/CT study (tags, folder names, per-slice headers,
PET quantisation) and writes them with the encoders of :mod:`petctiqa.phantom_dicom`. Every
value is a function of its inputs, so the same study gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from petctiqa import __version__
from petctiqa.phantom_dicom import (
    code_item,
    da,
    ds_text,
    element_bytes,
    file_meta_bytes,
    pixel_data_bytes,
    tm,
)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
F18_HALF_LIFE_S = 6586.2
"""Half-life of F-18 in seconds, as written by the scanner."""
CT_SLICE_MM = 5.0
PET_SLICE_MM = 3.27
PET_FIELD_MM = 600.0
PET_STORED_MAX = 32767
"""Largest stored PET value of each slice (uint16 kept below 2**15 for lenient readers)."""
BED_SECONDS = 180
STUDY_DESCRIPTION = "PET-CT"
CT_DESCRIPTION = "CT Thorax 5mm"
PET_DESCRIPTION = "PET AC"
CT_SERIES_NUMBER = 2
PET_SERIES_NUMBER = 4


@dataclass(frozen=True)
class Grid:
    """An axial image grid: column / row centres (mm) and slice z (mm), in file order."""

    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray
    spacing: float

    @property
    def origin(self) -> tuple[float, float]:
        return float(self.xs[0]), float(self.ys[0])


@dataclass(frozen=True)
class Acquisition:
    """Patient, dose and timing of one study."""

    patient_id: str
    sex: str
    age: int
    weight_kg: float
    height_m: float
    study_date: dt.date
    injection: dt.datetime
    ct_start: dt.datetime
    pet_start: dt.datetime
    dose_bq: float

    @property
    def decayed_dose_bq(self) -> float:
        elapsed = (self.pet_start - self.injection).total_seconds()
        return self.dose_bq * 2.0 ** (-elapsed / F18_HALF_LIFE_S)


def phantom_uid(seed: int, *parts: str | int) -> str:
    """A deterministic DICOM UID ``2.25.<int>`` from SHA-256 of (seed, parts)."""
    key = "\x1f".join(["petctiqa-phantom", str(int(seed)), *map(str, parts)])
    return "2.25." + str(int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big"))


def _common_dataset(acq: Acquisition, study_uid: str, for_uid: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDate = da(acq.study_date)
    ds.StudyTime = tm(acq.ct_start - dt.timedelta(minutes=2))
    ds.AccessionNumber = ""
    ds.Manufacturer = "petctiqa"
    ds.InstitutionName = "petctiqa synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = STUDY_DESCRIPTION
    ds.ManufacturerModelName = "synthetic thorax PET/CT"
    ds.PatientName = acq.patient_id
    ds.PatientID = acq.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = acq.sex
    ds.PatientAge = f"{acq.age:03d}Y"
    ds.PatientSize = f"{acq.height_m:.2f}"
    ds.PatientWeight = f"{acq.weight_kg:.1f}"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic data, no real patient"
    ds.BodyPartExamined = "CHEST"
    ds.SoftwareVersions = f"petctiqa {__version__}"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.StudyID = ""
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def series_dataset(
    acq: Acquisition,
    study_uid: str,
    for_uid: str,
    series_uid: str,
    modality: str,
    grid: Grid,
    matrix: int,
) -> Dataset:
    ds = _common_dataset(acq, study_uid, for_uid)
    start = acq.ct_start if modality == "CT" else acq.pet_start
    ds.SOPClassUID = CT_IMAGE_STORAGE if modality == "CT" else PET_IMAGE_STORAGE
    ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = da(acq.study_date)
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = tm(start)
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.Rows = ds.Columns = matrix
    ds.PixelSpacing = [ds_text(grid.spacing), ds_text(grid.spacing)]
    if modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesDescription = CT_DESCRIPTION
        ds.SeriesNumber = CT_SERIES_NUMBER
        ds.AcquisitionNumber = 1
        ds.ScanOptions = "HELICAL MODE"
        ds.SliceThickness = ds_text(CT_SLICE_MM)
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = ds_text(grid.spacing * matrix)
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "150"
        ds.RotationDirection = "CW"
        ds.XRayTubeCurrent = 80
        ds.ConvolutionKernel = "B31f"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.SeriesDescription = PET_DESCRIPTION
        ds.SeriesNumber = PET_SERIES_NUMBER
        ds.SliceThickness = ds_text(PET_SLICE_MM)
        ds.ReconstructionDiameter = ds_text(PET_FIELD_MM)
        ds.ActualFrameDuration = BED_SECONDS * 1000
        ds.CorrectedImage = ["NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN"]
        ds.RescaleIntercept = "0"
        ds.RescaleType = "BQML"
        ds.SeriesType = ["WHOLE BODY", "IMAGE"]
        ds.Units = "BQML"
        ds.CountsSource = "EMISSION"
        ds.RandomsCorrectionMethod = "DLYD"
        ds.AttenuationCorrectionMethod = "measured"
        ds.DecayCorrection = "START"
        ds.ReconstructionMethod = "OSEM3D 4i8s"
        ds.ScatterCorrectionMethod = "Model-based"
        ds.NumberOfSlices = len(grid.zs)
        ds.SliceSensitivityFactor = "1"
        window = Dataset()
        window.EnergyWindowLowerLimit = "435"
        window.EnergyWindowUpperLimit = "650"
        ds.EnergyWindowRangeSequence = Sequence([window])
        drug = Dataset()
        drug.Radiopharmaceutical = "Fluorodeoxyglucose"
        drug.RadiopharmaceuticalStartTime = tm(acq.injection)
        drug.RadiopharmaceuticalStartDateTime = acq.injection.strftime("%Y%m%d%H%M%S.00")
        drug.RadionuclideTotalDose = ds_text(acq.dose_bq)
        drug.RadionuclideHalfLife = ds_text(F18_HALF_LIFE_S)
        drug.RadionuclidePositronFraction = "0.9673"
        drug.RadionuclideCodeSequence = Sequence([code_item("C-111A1", "SRT", "^18^Fluorine")])
        drug.RadiopharmaceuticalCodeSequence = Sequence(
            [code_item("C-B1031", "SRT", "Fluorodeoxyglucose F^18^")]
        )
        ds.RadiopharmaceuticalInformationSequence = Sequence([drug])
    return ds


def study_folder(acq: Acquisition, study_uid: str) -> str:
    return f"{acq.study_date.strftime('%m-%d-%Y')}-NA-{STUDY_DESCRIPTION}-{study_uid[-5:]}"


def series_folder(number: int, description: str, series_uid: str) -> str:
    return f"{number:.6f}-{description}-{series_uid[-5:]}"


@dataclass(frozen=True)
class SliceHeader:
    """The per-slice tags of one instance."""

    instance_number: int
    z_mm: float
    rescale_slope: str | None = None
    acquisition_time: str | None = None


def write_series(
    folder: Path,
    base: Dataset,
    grid: Grid,
    stored: np.ndarray,
    seed: int,
    patient_id: str,
    headers: list[SliceHeader],
) -> tuple[Path, ...]:
    """Write one series as ``1-NN.dcm`` files, published into ``folder`` all at once.

    The static tags are encoded once; per slice only the changing tags are encoded and merged
    in tag order (a valid explicit VR little endian file, Pixel Data last). Files go to a hidden
    staging folder that replaces ``folder`` when complete, so a reader never sees a partly
    written series and an interrupted run leaves any earlier series intact.
    """
    static = element_bytes(base)
    x_text, y_text = (ds_text(v) for v in grid.origin)
    staging = folder.parent / f".{folder.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    names = []
    for k, header in enumerate(headers):
        sop_uid = phantom_uid(seed, patient_id, base.Modality, "instance", header.instance_number)
        varying = Dataset()
        varying.SOPInstanceUID = sop_uid
        varying.InstanceNumber = header.instance_number
        varying.ImagePositionPatient = [x_text, y_text, ds_text(header.z_mm)]
        varying.SliceLocation = ds_text(header.z_mm)
        if header.rescale_slope is not None:
            varying.RescaleSlope = header.rescale_slope
            varying.ImageIndex = header.instance_number
        if header.acquisition_time is not None:
            varying.AcquisitionTime = header.acquisition_time
        elements = {**static, **element_bytes(varying)}
        body = b"".join(elements[tag] for tag in sorted(elements))
        pixels = pixel_data_bytes(stored[k].astype("<u2").tobytes())
        name = f"1-{header.instance_number:02d}.dcm"
        with open(staging / name, "wb") as handle:
            handle.write(file_meta_bytes(base.SOPClassUID, sop_uid) + body + pixels)
        names.append(name)
    if folder.exists():
        retired = folder.parent / f".{folder.name}.old"
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(folder, retired)
        os.replace(staging, folder)
        shutil.rmtree(retired)
    else:
        os.replace(staging, folder)
    return tuple(folder / name for name in names)


def quantise_pet(bqml: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """uint16 slices and their RescaleSlope strings (stored * slope = Bq/ml)."""
    stored = np.zeros(bqml.shape, dtype=np.uint16)
    slopes: list[str] = []
    for k, plane in enumerate(bqml):
        peak = float(plane.max())
        slope_text = ds_text(peak / PET_STORED_MAX) if peak > 0 else "1"
        slope = float(slope_text)
        stored[k] = np.clip(np.rint(plane / slope), 0, 65535).astype(np.uint16)
        slopes.append(slope_text)
    return stored, slopes
