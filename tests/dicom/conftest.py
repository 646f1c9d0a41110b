"""Synthetic DICOM writers for the ingest tests (small real files written with pydicom)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
FOR_UID = "1.2.826.0.1.3680043.8.498.2"


def base_dataset(
    sop_class: str, modality: str, series_uid: str, sop_uid: str | None = None
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = "SYN-001"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = FOR_UID
    ds.StudyDate = "20240102"
    ds.SeriesDate = "20240102"
    ds.StudyDescription = "synthetic"
    ds.SeriesDescription = f"synthetic {modality}"
    ds.SeriesNumber = 1 if modality == "CT" else 2
    return ds


def image_slice(
    modality: str,
    series_uid: str,
    position: tuple[float, float, float],
    pixels: np.ndarray,
    *,
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    spacing=(2.0, 2.0),
    slope: float = 1.0,
    intercept: float = 0.0,
    instance_number: int = 1,
) -> Dataset:
    sop_class = CT_STORAGE if modality == "CT" else PET_STORAGE
    ds = base_dataset(sop_class, modality, series_uid)
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PixelSpacing = [f"{v:.4f}" for v in spacing]
    ds.SliceThickness = "3.0"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = f"{slope:.8g}"
    ds.RescaleIntercept = f"{intercept:.8g}"
    ds.PixelData = pixels.astype("<i2").tobytes()
    return ds


def add_pet_tags(
    ds: Dataset,
    *,
    weight: str | None = "70",
    dose: str | None = "370000000",
    half_life: str | None = "6586.2",
    start_time: str | None = "100000",
    start_datetime: str | None = None,
    series_time: str = "110000",
    acquisition_time: str | None = "110000",
    decay: str = "START",
    corrected=("ATTN", "DECY"),
    units: str = "BQML",
) -> Dataset:
    ds.Units = units
    ds.DecayCorrection = decay
    ds.CorrectedImage = list(corrected)
    ds.SeriesTime = series_time
    if acquisition_time is not None:
        ds.AcquisitionDate = ds.SeriesDate
        ds.AcquisitionTime = acquisition_time
    if weight is not None:
        ds.PatientWeight = weight
    info = Dataset()
    if dose is not None:
        info.RadionuclideTotalDose = dose
    if half_life is not None:
        info.RadionuclideHalfLife = half_life
    if start_time is not None:
        info.RadiopharmaceuticalStartTime = start_time
    if start_datetime is not None:
        info.RadiopharmaceuticalStartDateTime = start_datetime
    ds.RadiopharmaceuticalInformationSequence = [info]
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    folder: Path,
    modality: str,
    z_positions,
    *,
    matrix: int = 8,
    names=None,
    instance_numbers=None,
    pet_tags: dict | None = None,
    series_uid: str | None = None,
    **slice_kwargs,
) -> tuple[str, list[Path]]:
    """Write one series; slice k holds the value 100 * k + 1 everywhere (before rescale)."""
    series_uid = series_uid or generate_uid()
    paths = []
    for k, z in enumerate(z_positions):
        pixels = np.full((matrix, matrix), 100 * k + 1, dtype=np.int16)
        ds = image_slice(
            modality,
            series_uid,
            (-8.0, -8.0, float(z)),
            pixels,
            instance_number=(instance_numbers[k] if instance_numbers else k + 1),
            **slice_kwargs,
        )
        if modality == "PT":
            add_pet_tags(ds, **(pet_tags or {}))
        name = names[k] if names else f"{k:03d}.dcm"
        paths.append(save(ds, folder / name))
    return series_uid, paths


@pytest.fixture
def dicom_writers():
    """The module's writer functions, for tests."""
    return _THIS_MODULE


@pytest.fixture(scope="session")
def sts001(shared_data):
    """The index of STS_001 (whole-body PET, PET crop, CT crop) from the real data."""
    from petctiqa.dicom.index import index_dicom_tree

    return index_dicom_tree(shared_data / "dicom" / "STS_001")


__all__ = ["pydicom"]


# Captured while this module executes: every tests/*/conftest.py is imported under the same name
# "conftest", so sys.modules["conftest"] later points at whichever conftest pytest loaded last.
_THIS_MODULE = sys.modules[__name__]
