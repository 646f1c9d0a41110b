"""The built-in synthetic thorax PET/CT phantom, written as real DICOM.

Each patient is one FDG PET/CT study (shoulders to upper abdomen) in the layout of the NBIA Data
Retriever::

    <out>/Lung-PET-CT-Dx-Phantom/PHANTOM-0001/<MM-DD-YYYY>-NA-PET-CT-<last 5 of StudyUID>/
        2.000000-CT Thorax 5mm-<last 5 of SeriesUID>/1-01.dcm ...
        4.000000-PET AC-<last 5 of SeriesUID>/1-01.dcm ...

* CT: CT Image Storage, 512x512 uint16 with RescaleIntercept -1024 / slope 1 (HU), pixel spacing
  0.9375 or 0.977 mm, 5 mm slices, white image noise of about 10-16 HU.
* PET: PET Image Storage, 128x128 at 4.6875 mm (600 mm field), 3.27 mm slices covering a longer
  range than the CT, Units BQML, DecayCorrection START, CorrectedImage with ATTN and DECY, F-18
  FDG RadiopharmaceuticalInformationSequence, PatientWeight; float activity smoothed to 6 mm
  FWHM, quantised to uint16 with a per-slice RescaleSlope as scanners do. Two bed positions
  (AcquisitionTime 3 minutes apart; SeriesTime is the first).
* Both series share StudyInstanceUID and FrameOfReferenceUID; their fields of view, origins and
  slice positions differ, so consumers must resample in patient coordinates.

The anatomy (see :mod:`petctiqa.phantom_anatomy`) and every tag are deterministic functions of
(seed, patient): UIDs are ``2.25.<128-bit integer from SHA-256>``, dates and times are drawn
from the seeded generator, so the same seed always gives byte-identical files. This module
draws each study and its voxels; :mod:`petctiqa.phantom_series` writes its DICOM series.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from petctiqa.atomic import atomic_write_text
from petctiqa.phantom_anatomy import (
    Anatomy,
    Lesion,
    build_thorax,
    draw_habitus,
    paint,
    point_truth,
)
from petctiqa.phantom_dicom import tm
from petctiqa.phantom_series import (
    BED_SECONDS,
    CT_DESCRIPTION,
    CT_IMAGE_STORAGE,
    CT_SERIES_NUMBER,
    CT_SLICE_MM,
    F18_HALF_LIFE_S,
    PET_DESCRIPTION,
    PET_FIELD_MM,
    PET_IMAGE_STORAGE,
    PET_SERIES_NUMBER,
    PET_SLICE_MM,
    STUDY_DESCRIPTION,
    Acquisition,
    Grid,
    SliceHeader,
    phantom_uid,
    quantise_pet,
    series_dataset,
    series_folder,
    study_folder,
    write_series,
)
from petctiqa.pool import watch_main_process
from petctiqa.seeding import rng_for

__all__ = [
    "F18_HALF_LIFE_S",
    "Landmark",
    "PhantomStudy",
    "phantom_patient_id",
    "phantom_uid",
    "write_phantom_study",
    "write_phantom_tree",
]

COLLECTION = "Lung-PET-CT-Dx-Phantom"
PET_FWHM_MM = 6.0
"""Spatial resolution of the PET images (Gaussian FWHM)."""


@dataclass(frozen=True)
class Landmark:
    """A point well inside one structure with the phantom's noise-free values there."""

    name: str
    position_mm: tuple[float, float, float]
    """Patient coordinates (LPS, mm)."""
    tissue: str
    """Tissue painted at the point (e.g. "liver")."""
    hu: float
    suv: float


@dataclass(frozen=True)
class PhantomStudy:
    """What :func:`write_phantom_study` wrote for one patient, plus its ground truth."""

    patient_id: str
    study_uid: str
    ct_series_uid: str
    pet_series_uid: str
    ct_dir: Path
    pet_dir: Path
    ct_files: tuple[Path, ...]
    """CT slice files from superior to inferior (InstanceNumber 1, 2, ...)."""
    pet_files: tuple[Path, ...]
    """PET slice files from superior to inferior."""
    frame_of_reference_uid: str = ""
    weight_kg: float = 0.0
    injected_dose_bq: float = 0.0
    """RadionuclideTotalDose at RadiopharmaceuticalStartTime."""
    decayed_dose_bq: float = 0.0
    """Injected dose decayed to the PET SeriesTime (the SUV denominator with DecayCorrection START)."""
    lesions: tuple[Lesion, ...] = ()
    landmarks: tuple[Landmark, ...] = ()


def phantom_patient_id(patient_index: int) -> str:
    """``PHANTOM-0001`` for patient_index 1 (indices start at 1)."""
    return f"PHANTOM-{patient_index:04d}"


def _draw_acquisition(seed: int, patient_index: int) -> Acquisition:
    rng = rng_for(seed, f"phantom/{phantom_patient_id(patient_index)}/acquisition")
    sex = "M" if rng.random() < 0.55 else "F"
    weight = float(np.round(rng.uniform(60, 105) if sex == "M" else rng.uniform(50, 90), 1))
    height = float(np.round(rng.uniform(1.65, 1.92) if sex == "M" else rng.uniform(1.52, 1.76), 2))
    age = int(rng.integers(42, 84))
    day = dt.date(2019, 1, 7) + dt.timedelta(days=int(rng.integers(0, 730)))
    injection = dt.datetime.combine(day, dt.time(8, 0)) + dt.timedelta(
        minutes=int(rng.integers(0, 240)), seconds=int(rng.integers(0, 60))
    )
    uptake = dt.timedelta(minutes=int(rng.integers(55, 76)), seconds=int(rng.integers(0, 60)))
    pet_start = injection + uptake
    ct_start = pet_start - dt.timedelta(minutes=3, seconds=int(rng.integers(0, 40)))
    dose = float(np.round(3.7e6 * weight * rng.uniform(0.9, 1.1), -5))
    return Acquisition(
        phantom_patient_id(patient_index), sex, age, weight, height, day, injection, ct_start,
        pet_start, dose,
    )  # fmt: skip


def _ct_grid(rng: np.random.Generator, matrix: int, z_top: float, n_slices: int) -> Grid:
    field = float(rng.choice([480.0, 500.0]))
    spacing = field / matrix
    centre_y = float(np.round(rng.uniform(-10, 25), 1))
    x0 = round(-field / 2 + spacing / 2, 4)
    y0 = round(centre_y - field / 2 + spacing / 2, 4)
    xs = x0 + spacing * np.arange(matrix)
    ys = y0 + spacing * np.arange(matrix)
    zs = np.round(z_top - CT_SLICE_MM * np.arange(n_slices), 4)
    return Grid(xs, ys, zs, spacing)


def _pet_grid(matrix: int, ct: Grid) -> Grid:
    spacing = PET_FIELD_MM / matrix
    x0 = round(-PET_FIELD_MM / 2 + spacing / 2, 4)
    xs = x0 + spacing * np.arange(matrix)
    # the PET axial range starts above and ends below the CT range, off the CT slice grid
    top = float(ct.zs[0]) + 7.3
    bottom = float(ct.zs[-1]) - 9.1
    n = int(math.ceil((top - bottom) / PET_SLICE_MM)) + 1
    zs = np.round(top - PET_SLICE_MM * np.arange(n), 4)
    return Grid(xs, xs.copy(), zs, spacing)


def _ct_volume(anatomy: Anatomy, grid: Grid, rng: np.random.Generator, noise_hu: float):
    hu = paint(anatomy.shapes, grid.xs, grid.ys, grid.zs, "hu", edge_mm=grid.spacing,
               background=-1000.0)  # fmt: skip
    # white noise from a small bank of planes, each slice a different plane and shift
    bank = rng.standard_normal((7, *hu.shape[1:]), dtype=np.float32) * np.float32(noise_hu)
    shifts = rng.integers(0, hu.shape[1], size=(hu.shape[0], 2))
    for k in range(hu.shape[0]):
        hu[k] += np.roll(bank[k % 7], tuple(shifts[k]), axis=(0, 1))
    hu += np.float32(1024.0)
    return np.clip(np.rint(hu, out=hu), 0, 4095, out=hu).astype(np.uint16)


def _pet_suv(anatomy: Anatomy, grid: Grid, rng: np.random.Generator, noise: float):
    """Body-weight SUV on the PET grid: partial volume, noise, 6 mm FWHM, zero outside the body."""
    sub = np.array([-1.0, 0.0, 1.0]) * PET_SLICE_MM / 3
    fine_z = (grid.zs[:, None] + sub[None, :]).ravel()
    fine = paint(anatomy.shapes, grid.xs, grid.ys, fine_z, "suv", edge_mm=grid.spacing)
    suv = fine.reshape(len(grid.zs), 3, len(grid.ys), len(grid.xs)).mean(axis=1)
    body = suv > 0.05
    # noise before the resolution blur, so it is spatially correlated as in OSEM images
    suv += rng.standard_normal(suv.shape, dtype=np.float32) * np.sqrt(suv * np.float32(noise))
    sigma_mm = PET_FWHM_MM / (2 * math.sqrt(2 * math.log(2)))
    sigma_xy = math.sqrt(max(sigma_mm**2 - grid.spacing**2 / 12, 0.0)) / grid.spacing
    sigma_z = math.sqrt(max(sigma_mm**2 - PET_SLICE_MM**2 / 12, 0.0)) / PET_SLICE_MM
    suv = ndimage.gaussian_filter(suv, (sigma_z, sigma_xy, sigma_xy), mode="constant")
    near_body = ndimage.maximum_filter(body, size=3, mode="constant")
    suv[~near_body] = 0.0
    return np.clip(suv, 0.0, None)


def write_phantom_study(
    out_dir: Path,
    patient_index: int,
    seed: int = 0,
    *,
    ct_matrix: int = 512,
    pet_matrix: int = 128,
) -> PhantomStudy:
    """Write one synthetic thorax PET/CT study (CT + PET series) under ``out_dir``.

    ``patient_index`` starts at 1 (``PHANTOM-0001``). Fields of view are fixed in mm, so
    smaller matrices (e.g. ``ct_matrix=64, pet_matrix=32`` for fast tests) give the same anatomy
    at coarser pixels. Existing files at the same paths are replaced atomically.
    """
    if patient_index < 1:
        raise ValueError(f"patient_index starts at 1 (PHANTOM-0001), got {patient_index}")
    if ct_matrix < 16 or pet_matrix < 8:
        raise ValueError(f"matrix too small: ct_matrix={ct_matrix}, pet_matrix={pet_matrix}")
    out_dir = Path(out_dir)
    acq = _draw_acquisition(seed, patient_index)
    pid = acq.patient_id
    rng = rng_for(seed, f"phantom/{pid}/anatomy")
    n_ct = int(rng.integers(46, 57))
    z_top = float(np.round(rng.uniform(-140, -60), 1))
    ct_grid = _ct_grid(rng, ct_matrix, z_top, n_ct)
    pet_grid = _pet_grid(pet_matrix, ct_grid)
    habitus = draw_habitus(rng, acq.sex, acq.weight_kg)
    anatomy = build_thorax(
        rng, habitus, z_top, (n_ct - 1) * CT_SLICE_MM, n_lesions=int(rng.integers(1, 4))
    )
    ct_noise = float(10.0 + 0.08 * (acq.weight_kg - 50) + rng.uniform(0, 2))
    pet_noise = float(0.08 + 0.0015 * (acq.weight_kg - 50) + rng.uniform(0, 0.04))

    study_uid = phantom_uid(seed, pid, "study")
    for_uid = phantom_uid(seed, pid, "frame-of-reference")
    ct_uid = phantom_uid(seed, pid, "series", "CT")
    pet_uid = phantom_uid(seed, pid, "series", "PT")
    study_dir = out_dir / COLLECTION / pid / study_folder(acq, study_uid)
    ct_dir = study_dir / series_folder(CT_SERIES_NUMBER, CT_DESCRIPTION, ct_uid)
    pet_dir = study_dir / series_folder(PET_SERIES_NUMBER, PET_DESCRIPTION, pet_uid)

    ct_stored = _ct_volume(anatomy, ct_grid, rng_for(seed, f"phantom/{pid}/ct-noise"), ct_noise)
    ct_base = series_dataset(acq, study_uid, for_uid, ct_uid, "CT", ct_grid, ct_matrix)
    ct_headers = [SliceHeader(k + 1, float(z)) for k, z in enumerate(ct_grid.zs)]
    ct_files = write_series(ct_dir, ct_base, ct_grid, ct_stored, seed, pid, ct_headers)

    suv = _pet_suv(anatomy, pet_grid, rng_for(seed, f"phantom/{pid}/pet-noise"), pet_noise)
    bqml = suv * np.float32(acq.decayed_dose_bq / (acq.weight_kg * 1000.0))
    pet_stored, slopes = quantise_pet(bqml)
    n_pet = len(pet_grid.zs)
    second_bed = tm(acq.pet_start + dt.timedelta(seconds=BED_SECONDS))
    acq_times = [tm(acq.pet_start) if k < n_pet // 2 else second_bed for k in range(n_pet)]
    pet_base = series_dataset(acq, study_uid, for_uid, pet_uid, "PT", pet_grid, pet_matrix)
    pet_headers = [
        SliceHeader(k + 1, float(z), slopes[k], acq_times[k]) for k, z in enumerate(pet_grid.zs)
    ]
    pet_files = write_series(pet_dir, pet_base, pet_grid, pet_stored, seed, pid, pet_headers)

    landmarks = tuple(
        Landmark(name, point, *point_truth(anatomy.shapes, point))
        for name, point in anatomy.landmarks
    )
    return PhantomStudy(
        patient_id=pid,
        study_uid=study_uid,
        ct_series_uid=ct_uid,
        pet_series_uid=pet_uid,
        ct_dir=ct_dir,
        pet_dir=pet_dir,
        ct_files=ct_files,
        pet_files=pet_files,
        frame_of_reference_uid=for_uid,
        weight_kg=acq.weight_kg,
        injected_dose_bq=acq.dose_bq,
        decayed_dose_bq=acq.decayed_dose_bq,
        lesions=anatomy.lesions,
        landmarks=landmarks,
    )


METADATA_COLUMNS = (
    "Series UID", "Collection", "3rd Party Analysis", "Data Description URI", "Subject ID",
    "Study UID", "Study Description", "Study Date", "Series Description", "Manufacturer",
    "Modality", "SOP Class Name", "SOP Class UID", "Number of Images", "File Size",
    "File Location", "Download Timestamp",
)  # fmt: skip


def _metadata_csv(out_dir: Path, studies: list[PhantomStudy]) -> str:
    """The NBIA Data Retriever ``metadata.csv`` (17 columns) for the written studies."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    for study in studies:
        for modality, uid, folder, files, description in (
            ("CT", study.ct_series_uid, study.ct_dir, study.ct_files, CT_DESCRIPTION),
            ("PT", study.pet_series_uid, study.pet_dir, study.pet_files, PET_DESCRIPTION),
        ):
            date = folder.parent.name[:10]
            writer.writerow([
                uid, COLLECTION, "NO", "", study.patient_id, study.study_uid, STUDY_DESCRIPTION,
                date, description, "petctiqa", modality,
                "CT Image Storage" if modality == "CT" else "Positron Emission Tomography Image Storage",
                CT_IMAGE_STORAGE if modality == "CT" else PET_IMAGE_STORAGE,
                len(files), sum(f.stat().st_size for f in files),
                "./" + folder.relative_to(out_dir).as_posix(), "",
            ])  # fmt: skip
    return buffer.getvalue()


def _write_one(args: tuple[Path, int, int, int, int]) -> PhantomStudy:
    out_dir, index, seed, ct_matrix, pet_matrix = args
    return write_phantom_study(out_dir, index, seed, ct_matrix=ct_matrix, pet_matrix=pet_matrix)


def write_phantom_tree(
    out_dir: Path,
    patients: int = 20,
    seed: int = 0,
    progress: bool = False,
    *,
    jobs: int | None = None,
    ct_matrix: int = 512,
    pet_matrix: int = 128,
) -> list[PhantomStudy]:
    """Write ``patients`` studies (PHANTOM-0001 ...) and the NBIA ``metadata.csv`` under ``out_dir``.

    Deterministic: the same (patients, seed) gives byte-identical files for any ``jobs``
    (worker processes; default: all cores, at most one per patient). Shows a tqdm bar on stderr
    when ``progress`` is true. ``ct_matrix`` / ``pet_matrix`` as in :func:`write_phantom_study`.
    Returns the studies in patient order.
    """
    if patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    out_dir = Path(out_dir)
    workers = min(patients, jobs or os.cpu_count() or 1)
    tasks = [(out_dir, i, seed, ct_matrix, pet_matrix) for i in range(1, patients + 1)]
    bar = tqdm(total=patients, desc="phantom", unit="patient", disable=not progress)
    with bar:
        if workers <= 1:
            studies = []
            for task in tasks:
                studies.append(_write_one(task))
                bar.update()
        else:
            # the workers end when this process dies, even by SIGKILL (else they wait forever)
            with ProcessPoolExecutor(
                max_workers=workers, initializer=watch_main_process, initargs=(os.getpid(),)
            ) as pool:
                studies = []
                for study in pool.map(_write_one, tasks):
                    studies.append(study)
                    bar.update()
    atomic_write_text(out_dir / "metadata.csv", _metadata_csv(out_dir, studies))
    return studies
