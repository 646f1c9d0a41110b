"""CT sparse-view streaks: the slice reconstructed from only ``views`` projections over 180
degrees (angular undersampling), as in sparse-view low-dose CT.

Model (2-D parallel beam, noise-free): ``mu = mu_water (1 + HU / 1000)``, line integrals
``p`` at ``views`` angles and at ``reference_views`` angles (both from the same coarse
projection as :mod:`petctiqa.distortions.ct_dose`), each reconstructed by filtered
back-projection on the slice grid; their difference (the streaks) is converted to HU and added,
so the FBP's own blur is not applied. ``views = 0`` leaves the slice unchanged.
Deterministic: ``rng`` is not used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from petctiqa.distortions import projection
from petctiqa.distortions.ct_dose import DEFAULT_MU_WATER
from petctiqa.distortions.registry import (
    Distortion,
    Parameter,
    keyword_configure,
    register_distortion,
)
from petctiqa.distortions.slices import PetCtSlice
from petctiqa.errors import PetctiqaError

NAME = "ct_sparse_view"
MAX_VIEWS = 4096


@dataclass(frozen=True)
class SparseViewModel:
    """Settings (a protocol axis's ``options``)."""

    reference_views: int = 720
    mu_water_per_cm: float = DEFAULT_MU_WATER
    projection_downsample: int = 2
    filter_name: str = "ramp"

    def __post_init__(self) -> None:
        projection.angles(self.reference_views)
        projection.check_filter(self.filter_name)
        if not self.mu_water_per_cm > 0:
            raise PetctiqaError(f"mu_water_per_cm must be > 0, got {self.mu_water_per_cm!r}")

    def __call__(self, data: PetCtSlice, views: float, rng: np.random.Generator) -> PetCtSlice:
        if not isinstance(data, PetCtSlice) or data.ct_hu is None:
            raise PetctiqaError(f"{NAME} acts on a PetCtSlice with a CT, got {data!r}")
        if views != int(views) or (0 < views < 2):
            raise PetctiqaError(f"{NAME}: views must be 0 (off) or an integer >= 2, got {views}")
        if views == 0:
            return dataclasses.replace(data, ct_hu=data.ct_hu.copy())
        if 2 * views > self.reference_views:
            raise PetctiqaError(
                f"{NAME}: views ({views:g}) must be at most half of reference_views "
                f"({self.reference_views}), the dense scan the streaks are measured against"
            )
        streaks = self.streaks_hu(data.ct_hu, data.pixel_mm, int(views))
        return dataclasses.replace(data, ct_hu=(data.ct_hu + streaks).astype(np.float32))

    def streaks_hu(self, hu: np.ndarray, pixel_mm: float, views: int) -> np.ndarray:
        """FBP from ``views`` minus FBP from ``reference_views`` projections, in HU."""
        square, offset = projection.pad_square(projection.mu_from_hu(hu, self.mu_water_per_cm))
        side = square.shape[0]
        images = []
        for count in (views, self.reference_views):
            theta = projection.angles(count)
            p = projection.line_integrals(square, pixel_mm, theta, self.projection_downsample)
            images.append(
                projection.filtered_back_projection(p, theta, side, self.filter_name)
                / (pixel_mm / 10.0)
            )
        difference = (images[0] - images[1]) * 1000.0 / self.mu_water_per_cm
        return projection.crop(difference, offset, hu.shape)


DISTORTION = register_distortion(
    Distortion(
        name=NAME,
        domain="ct_hu",
        parameter=Parameter("views", "projections over 180 degrees (0 = off)", 0.0, 0.0, MAX_VIEWS),
        summary="CT reconstructed from few projection views: streaks (FBP difference)",
        apply=SparseViewModel(),
        configure=keyword_configure(NAME, SparseViewModel),
    )
)
