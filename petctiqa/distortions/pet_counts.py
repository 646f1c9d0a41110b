"""PET count reduction: the slice as it would look with a fraction ``f`` of the detected counts
(a lower injected dose or a shorter frame), by a 2-D projection-domain count model.

Model (2-D per slice, parallel beam, no scatter, no randoms; see docs/distortions.md):

1. Activity ``A`` (Bq/mL; SUV times the series' Bq/mL per SUV) and the 511 keV attenuation
   ``mu`` (1/cm, bilinear from the CT's HU; a water-filled body outline when no CT covers the
   slice) are area-averaged onto a working grid of ``work_pixel_mm`` (the PET's own pixel).
2. Expected detected counts per ray (bin b, view a), over the frame:
   ``ybar = s * T / DF * V * radon(A)[b, a] / n_views * exp(-radon(mu)[b, a] * w)``
   with ``s`` the system sensitivity (detected coincidences per decay), ``T`` the frame
   duration, ``DF`` the DICOM DecayFactor, ``V = w^2 * thickness`` a voxel's volume and ``w``
   the working pixel; summed over all rays this is ``s * T / DF * (activity in the slab) *
   mean attenuation``.
3. Count noise ``d`` with zero mean, reconstructed after attenuation and sensitivity correction
   by filtered back-projection (``iradon``, Hann-windowed ramp by default), upsampled to the
   slice grid and added to the activity:

   - ``mode="insert"`` (default): the input is the full-count image, already noisy; the
     lower-count acquisition is its binomial thinning, so the added noise is
     ``d = (Binomial(N, f) - f N) / f`` with ``N ~ Poisson(ybar)``: variance
     ``ybar (1 / f - 1)``, so the total noise variance scales as ``1 / f`` and f = 1 leaves the
     slice unchanged.
   - ``mode="resimulate"``: the input is taken as noise-free truth and the whole acquisition at
     fraction f is simulated, ``d = Poisson(f ybar) / f - ybar``: variance ``ybar / f``.

FBP is linear, so the result is the input plus (FBP of the noisy data minus FBP of the
noise-free data): the FBP's own blur is not applied to the input, and the mean is preserved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from petctiqa.distortions import projection
from petctiqa.distortions.registry import (
    Distortion,
    Parameter,
    keyword_configure,
    register_distortion,
)
from petctiqa.distortions.slices import PetCtSlice
from petctiqa.errors import PetctiqaError

NAME = "pet_count_reduction"
MODES = ("insert", "resimulate")
DEFAULT_SENSITIVITY = 0.009
"""Detected true coincidences per decay: 9 cps/kBq, the order of a clinical PET/CT's NEMA NU 2
sensitivity in 3-D mode (e.g. the GE Discovery ST of the STS data, ~9 cps/kBq in 3-D)."""
DEFAULT_WORK_PIXEL_MM = 4.0
"""Working pixel when the slice does not carry its PET volume (else the PET's own pixel)."""
BODY_OUTLINE_SUV = 0.1
"""Without a CT, voxels above this SUV (hole-filled) are taken as water at 511 keV."""


@dataclass(frozen=True)
class PetCountModel:
    """Settings of the count model (a protocol axis's ``options``)."""

    sensitivity: float = DEFAULT_SENSITIVITY
    views: int = 180
    work_pixel_mm: float | None = None
    filter_name: str = "hann"
    mode: str = "insert"

    def __post_init__(self) -> None:
        if not 0 < self.sensitivity <= 1:
            raise PetctiqaError(f"sensitivity must be in (0, 1], got {self.sensitivity!r}")
        if self.mode not in MODES:
            raise PetctiqaError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.work_pixel_mm is not None and not self.work_pixel_mm > 0:
            raise PetctiqaError(f"work_pixel_mm must be > 0, got {self.work_pixel_mm!r}")
        projection.check_filter(self.filter_name)
        projection.angles(self.views)

    def __call__(self, data: PetCtSlice, fraction: float, rng: np.random.Generator) -> PetCtSlice:
        if not isinstance(data, PetCtSlice):
            raise PetctiqaError(f"{NAME} acts on a PetCtSlice, got {type(data).__name__}")
        if self.mode == "insert" and fraction == 1.0:
            return _copy(data)
        noise = self.noise_bqml(data, fraction, rng)
        return data.with_activity_bqml(data.activity_bqml() + noise)

    def expected_counts(self, data: PetCtSlice) -> tuple[np.ndarray, np.ndarray, float, int]:
        """(ybar, the per-ray factor counts / ray sum of activity, working pixel, work side)."""
        activity = np.clip(data.activity_bqml(), 0.0, None)
        square, _ = projection.pad_square(activity)
        mu_square, _ = projection.pad_square(_mu_map(data))
        work_mm = self.work_pixel_mm or _native_pet_pixel(data) or DEFAULT_WORK_PIXEL_MM
        work_mm = max(work_mm, data.pixel_mm)  # never finer than the slice itself
        activity_w = projection.to_work_grid(square, data.pixel_mm, work_mm)
        mu_w = projection.to_work_grid(mu_square, data.pixel_mm, work_mm)
        work_mm = data.pixel_mm * square.shape[0] / activity_w.shape[0]  # the exact pixel
        theta = projection.angles(self.views)
        attenuation = np.exp(-projection.forward_project(mu_w, theta) * work_mm / 10.0)
        acq = data.acquisition
        voxel_ml = work_mm**2 * data.slice_thickness_mm / 1000.0
        scale = self.sensitivity * acq.frame_duration_s / acq.decay_factor * voxel_ml / self.views
        per_ray = scale * attenuation
        ybar = per_ray * np.clip(projection.forward_project(activity_w, theta), 0.0, None)
        return ybar, per_ray, work_mm, activity_w.shape[0]

    def noise_bqml(self, data: PetCtSlice, fraction: float, rng: np.random.Generator) -> np.ndarray:
        """The added activity noise (Bq/mL) on the slice grid."""
        ybar, per_ray, _, work_side = self.expected_counts(data)
        if self.mode == "insert":
            full = rng.poisson(ybar)
            d = (rng.binomial(full, fraction) - fraction * full) / fraction
        else:
            d = rng.poisson(fraction * ybar) / fraction - ybar
        theta = projection.angles(self.views)
        noise_w = projection.filtered_back_projection(
            d / per_ray, theta, work_side, self.filter_name
        )
        square, offset = projection.pad_square(data.pet)
        noise = projection.from_work_grid(noise_w, square.shape[0])
        return projection.crop(noise, offset, data.pet.shape)


def _copy(data: PetCtSlice) -> PetCtSlice:
    return dataclasses.replace(data, pet=data.pet.copy())


def _native_pet_pixel(data: PetCtSlice) -> float | None:
    if data.pet_volume is None:
        return None
    return float(np.linalg.norm(data.pet_volume.affine[:3, 0]))


def _mu_map(data: PetCtSlice) -> np.ndarray:
    """511 keV attenuation (1/cm) from the CT, or a water-filled body outline without one."""
    if data.ct_hu is not None:
        return projection.mu_511_from_hu(data.ct_hu)
    from scipy import ndimage  # lazy: protocol parsing imports every plug-in; no SciPy there

    suv = data.activity_bqml() / data.acquisition.bqml_per_suv
    body = ndimage.binary_fill_holes(suv > BODY_OUTLINE_SUV)
    return np.where(body, projection.MU_WATER_511_PER_CM, 0.0)


DISTORTION = register_distortion(
    Distortion(
        name=NAME,
        domain="pet_activity",
        parameter=Parameter("fraction", "of the acquired counts (dose x time)", 1.0, 1e-3, 1.0),
        summary="fewer PET counts: Poisson count model through attenuation, FBP reconstruction",
        apply=PetCountModel(),
        configure=keyword_configure(NAME, PetCountModel),
    )
)
