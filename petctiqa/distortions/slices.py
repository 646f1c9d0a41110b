"""The data that the PET and CT distortions act on: one CT slice with the PET resampled onto it.

:class:`PetCtSlice` carries the PET activity and the CT (HU) of the same slice on the same grid,
the pixel size, and the acquisition facts a count model needs (:class:`PetAcquisition`). It
also keeps the volumes and the CT slice index it was cut from, so that geometry distortions
(PET/CT misregistration) can resample the PET again in patient coordinates.

Acquisition facts come from the PET headers where present (:func:`pet_acquisition`):
``ActualFrameDuration``, ``DecayFactor``, and the SUV facts of :mod:`petctiqa.dicom.suv`
(dose, weight, decay to scan start). Absent ones take the stated defaults below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petctiqa.dicom.records import SeriesInfo, Volume, series_label
from petctiqa.errors import DicomError, PetctiqaError

DEFAULT_FRAME_DURATION_S = 180.0
"""Frame (bed position) duration when ActualFrameDuration is absent: 3 min, a common clinical
whole-body FDG protocol (2-4 min per bed)."""
DEFAULT_DOSE_BQ = 3.7e8
"""Injected FDG dose when unknown: 370 MBq (10 mCi)."""
DEFAULT_WEIGHT_KG = 75.0
DEFAULT_UPTAKE_DECAY = 2.0 ** (-3600.0 / 6586.2)
"""Decay of the dose to scan start when unknown: 60 min uptake of F-18 (half-life 6586.2 s)."""
SUV_UNITS = ("SUVbw", "GML")
ACTIVITY_UNIT = "BQML"


@dataclass(frozen=True)
class PetAcquisition:
    """What turns PET values into expected detected counts (see docs/distortions.md)."""

    frame_duration_s: float = DEFAULT_FRAME_DURATION_S
    decay_factor: float = 1.0
    """DICOM DecayFactor: the frame's mean activity is the stored (decay-corrected) activity
    divided by this."""
    bqml_per_suv: float = DEFAULT_DOSE_BQ * DEFAULT_UPTAKE_DECAY / (DEFAULT_WEIGHT_KG * 1000.0)
    """Bq/mL of 1 SUVbw: decayed dose / body weight in g."""
    from_headers: tuple[str, ...] = ()
    """Which fields were read from DICOM (the rest are the stated defaults)."""


@dataclass(frozen=True, eq=False)
class PetCtSlice:
    """PET and CT of one slice on one square-pixel grid."""

    pet: np.ndarray
    """float32 (rows, cols): activity in ``pet_unit``."""
    ct_hu: np.ndarray | None
    """float32 (rows, cols) HU on the same grid; None when no CT covers the slice."""
    pixel_mm: float
    slice_thickness_mm: float
    """Thickness of the PET slab whose counts make this slice (the PET slice step)."""
    pet_unit: str = "SUVbw"
    acquisition: PetAcquisition = PetAcquisition()
    pet_volume: Volume | None = None
    ct_volume: Volume | None = None
    ct_index: int | None = None

    def __post_init__(self) -> None:
        if self.pet.ndim != 2:
            raise PetctiqaError(f"PET slice must be 2-D, got shape {self.pet.shape}")
        if self.ct_hu is not None and self.ct_hu.shape != self.pet.shape:
            raise PetctiqaError(
                f"PET slice {self.pet.shape} and CT slice {self.ct_hu.shape} differ in shape"
            )
        if self.pet_unit not in (*SUV_UNITS, ACTIVITY_UNIT):
            raise PetctiqaError(f"PET unit must be SUVbw, GML or BQML, got {self.pet_unit!r}")
        if not self.pixel_mm > 0 or not self.slice_thickness_mm > 0:
            raise PetctiqaError("pixel size and slice thickness must be > 0 mm")
        for name, values in (("PET", self.pet), ("CT", self.ct_hu)):
            if values is not None and not np.all(np.isfinite(values)):
                raise PetctiqaError(f"{name} slice holds NaN or infinite values")

    def activity_bqml(self) -> np.ndarray:
        """The PET in Bq/mL (float64)."""
        scale = 1.0 if self.pet_unit == ACTIVITY_UNIT else self.acquisition.bqml_per_suv
        return self.pet.astype(np.float64) * scale

    def with_activity_bqml(self, activity: np.ndarray) -> PetCtSlice:
        """A copy with the PET replaced by ``activity`` (Bq/mL), in this slice's unit."""
        scale = 1.0 if self.pet_unit == ACTIVITY_UNIT else self.acquisition.bqml_per_suv
        return dataclasses.replace(self, pet=(activity / scale).astype(np.float32))


def pet_acquisition(series: SeriesInfo) -> PetAcquisition:
    """Acquisition facts of a PET series from its first slice's header (defaults otherwise)."""
    # lazy: protocol parsing imports every plug-in (and this module); no pydicom there
    from petctiqa.dicom.suv import series_suv_parameters
    from petctiqa.dicom.volume import full_dataset, read_slice_header

    if not series.files:
        raise DicomError(f"{series_label(series)}: no files")
    header = full_dataset(read_slice_header(Path(series.files[0])), stop_before_pixels=True)
    found: dict[str, float] = {}
    duration = _positive_tag(header, "ActualFrameDuration")
    if duration is not None:
        found["frame_duration_s"] = duration / 1000.0  # the tag is in ms
    decay = _positive_tag(header, "DecayFactor")
    if decay is not None:
        found["decay_factor"] = decay
    try:
        suv = series_suv_parameters([header], series_label(series))
    except DicomError:
        suv = None  # SUV facts missing: the count model uses its stated defaults
    if suv is not None and suv.units == "BQML":
        found["bqml_per_suv"] = 1.0 / suv.factor
    return PetAcquisition(**found, from_headers=tuple(sorted(found)))


def _positive_tag(header, keyword: str) -> float | None:
    try:
        value = float(header.get(keyword))
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def pet_ct_slice(
    pet: Volume, ct: Volume, ct_index: int, acquisition: PetAcquisition | None = None
) -> PetCtSlice:
    """The PET resampled onto CT slice ``ct_index`` (as the fusion render does) with that CT."""
    # lazy: protocol parsing imports every plug-in; render pulls in SciPy
    from petctiqa.render import resample_pet_to_ct_slice

    column_mm = float(np.linalg.norm(ct.affine[:3, 0]))
    row_mm = float(np.linalg.norm(ct.affine[:3, 1]))
    if abs(column_mm - row_mm) > 1e-3 * column_mm:
        raise PetctiqaError(f"CT pixels are not square ({row_mm} x {column_mm} mm)")
    return PetCtSlice(
        pet=resample_pet_to_ct_slice(pet, ct, ct_index),
        ct_hu=np.asarray(ct.array[ct_index], dtype=np.float32),
        pixel_mm=column_mm,
        slice_thickness_mm=float(np.linalg.norm(pet.affine[:3, 2])),
        pet_unit=pet.unit,
        acquisition=acquisition or PetAcquisition(),
        pet_volume=pet,
        ct_volume=ct,
        ct_index=ct_index,
    )
