"""Records shared by the DICOM modules and everything downstream (render, dataset, score), and
the one way messages name a series (:func:`series_label`)."""

from __future__ import annotations

import os.path
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SliceGeometry:
    """Header geometry of one image instance (no pixel data), as read by the indexer."""

    sop_instance_uid: str
    image_position: tuple[float, float, float]
    """ImagePositionPatient: centre of the first (top-left) voxel, patient mm (DICOM LPS)."""
    image_orientation: tuple[float, float, float, float, float, float]
    """ImageOrientationPatient: direction cosines of the row then of the column."""
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]
    """(row spacing, column spacing) in mm."""


@dataclass(frozen=True)
class SeriesInfo:
    """One image series, indexed from headers only (no pixel data read)."""

    patient_id: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    modality: str
    """DICOM Modality: "CT" or "PT" (other image modalities are indexed but never paired)."""
    series_description: str
    study_description: str
    series_number: int | None
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]
    """(row spacing, column spacing) in mm, as DICOM PixelSpacing."""
    slice_thickness: float | None
    units: str
    """PET: the Units tag (BQML, GML, CNTS, ...); CT: "HU"."""
    files: tuple[Path, ...]
    """One file per instance, in no particular order (volume loading sorts by geometry)."""
    study_date: str = ""
    """StudyDate as stored (YYYYMMDD), "" when absent."""
    slice_geometry: tuple[SliceGeometry, ...] = ()
    """Header geometry of each file, aligned with ``files`` (empty when not indexed from headers)."""

    @property
    def n_slices(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class SkippedFile:
    """A file the indexer did not use, and why (non-DICOM, RTSTRUCT, SEG, unreadable, ...)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class DicomIndex:
    series: tuple[SeriesInfo, ...]
    skipped: tuple[SkippedFile, ...]


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D image sorted along the slice normal, in real-world units.

    ``array[k, j, i]`` is slice k, row j, column i. ``affine`` maps homogeneous voxel indices
    ``(i, j, k, 1)`` (column, row, slice) to patient coordinates in mm (DICOM LPS).
    """

    array: np.ndarray
    """float32, shape (slices, rows, columns); HU for CT, the unit below for PET."""
    affine: np.ndarray
    """float64, shape (4, 4)."""
    unit: str
    """"HU", "BQML", "GML" (SUV stored by the scanner) or "SUVbw" (converted by petctiqa)."""
    series: SeriesInfo
    sop_instance_uids: tuple[str, ...]
    """SOPInstanceUID of each slice, in array order."""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def slice_normal(self) -> np.ndarray:
        """Unit vector along increasing slice index."""
        axis = self.affine[:3, 2]
        return axis / np.linalg.norm(axis)

    @property
    def slice_positions_mm(self) -> np.ndarray:
        """Position of each slice's origin along the slice normal (mm), increasing."""
        origins = self.affine[:3, 3] + np.outer(np.arange(self.shape[0]), self.affine[:3, 2])
        return origins @ self.slice_normal

    def voxel_to_patient(self, ijk: np.ndarray) -> np.ndarray:
        """Map (..., 3) voxel indices (i=column, j=row, k=slice) to patient mm."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def patient_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Map (..., 3) patient mm to fractional voxel indices (i, j, k)."""
        inverse = np.linalg.inv(self.affine)
        xyz = np.asarray(xyz, dtype=np.float64)
        return xyz @ inverse[:3, :3].T + inverse[:3, 3]


def series_label(series: SeriesInfo) -> str:
    """A short name for messages: modality, description and the folder holding the files."""
    folder = _common_folder(series.files)
    description = series.series_description or "no description"
    return f"{series.modality} series '{description}' in {folder}"


def _common_folder(files: Sequence[Path]) -> str:
    if not files:
        return "(no files)"
    parents = {str(Path(f).parent) for f in files}
    if len(parents) == 1:
        return parents.pop()
    return os.path.commonpath(sorted(parents))
