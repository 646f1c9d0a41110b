"""CT dose reduction: projection-domain noise insertion, the slice as scanned at a fraction
``f`` of the tube current-time product (mAs).

Model (2-D per slice, parallel beam, monoenergetic; see docs/distortions.md):

1. ``mu = mu_water (1 + HU / 1000)`` at the effective energy; line integrals
   ``p = radon(mu) * pixel`` are taken on a grid ``projection_downsample`` times coarser (they
   only need to be smooth) and interpolated back to the slice's bins.
2. Full-dose transmitted quanta per ray ``I1 = I0 exp(-p)``. The reduced-dose measurement
   given the full-dose one is ``I_f = f I1 + e_q + e_e`` with quantum noise
   ``e_q = Binomial(N, f) - f N``, ``N ~ Poisson(I1)`` (variance ``f (1 - f) I1``: binomial
   thinning of the photons) and electronic noise ``e_e ~ N(0, (1 - f^2) sigma_e^2)``, so that
   ``I_f`` has the variance of a real scan at dose f, ``f I1 + sigma_e^2``, given that the
   input image already carries the full-dose noise (``I1 + sigma_e^2``).
3. Noise line integrals ``d = -ln(I_f / (f I1)) - v / 2`` (``v`` = the variance of
   ``(I_f - f I1) / (f I1)``; the second term removes the log's bias to second order), with
   ``I_f`` floored at ``MIN_QUANTA``.
4. ``d`` is reconstructed by filtered back-projection (``iradon``, Hann-windowed ramp: a
   soft-tissue kernel) on the slice grid,
   converted to HU (``1000 mu / mu_water``) and added: inserted noise variance
   ``~ (1 / f - 1)`` times the full-dose quantum noise (plus the electronic term), mean HU
   unchanged, f = 1 leaves the slice unchanged.
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

NAME = "ct_dose_reduction"
DEFAULT_I0 = 1.0e6
"""Incident quanta per ray (one detector bin of one view) at full dose, with the default 360
views and Hann filter. Chosen so that the model's full-dose quantum noise in the liver of the
CRLM-CT-1004 test slice (~10 HU) is the order of that image's own noise (8-12 HU); see
docs/distortions.md. Scanner- and protocol-specific: set it per protocol."""
DEFAULT_ELECTRONIC_SIGMA = 5.0
"""Electronic noise standard deviation in quanta (stated default, not measured)."""
DEFAULT_MU_WATER = 0.19
"""Water at the ~70 keV effective energy of a 120 kVp beam (1/cm, NIST XCOM 0.193 at 70 keV)."""
MIN_QUANTA = 1.0
"""Floor of the reduced-dose quanta before the log (photon starvation)."""


@dataclass(frozen=True)
class CtDoseModel:
    """Settings of the noise insertion (a protocol axis's ``options``)."""

    i0: float = DEFAULT_I0
    electronic_sigma: float = DEFAULT_ELECTRONIC_SIGMA
    mu_water_per_cm: float = DEFAULT_MU_WATER
    views: int = 360
    projection_downsample: int = 2
    filter_name: str = "hann"

    def __post_init__(self) -> None:
        if not self.i0 > 0 or not self.mu_water_per_cm > 0 or self.electronic_sigma < 0:
            raise PetctiqaError("i0 and mu_water_per_cm must be > 0, electronic_sigma >= 0")
        if not isinstance(self.projection_downsample, int) or self.projection_downsample < 1:
            raise PetctiqaError(
                f"projection_downsample must be an integer >= 1, got {self.projection_downsample!r}"
            )
        projection.check_filter(self.filter_name)
        projection.angles(self.views)

    def __call__(self, data: PetCtSlice, fraction: float, rng: np.random.Generator) -> PetCtSlice:
        if not isinstance(data, PetCtSlice) or data.ct_hu is None:
            raise PetctiqaError(f"{NAME} acts on a PetCtSlice with a CT, got {data!r}")
        if fraction == 1.0:
            return dataclasses.replace(data, ct_hu=data.ct_hu.copy())
        noise = self.noise_hu(data.ct_hu, data.pixel_mm, fraction, rng)
        return dataclasses.replace(data, ct_hu=(data.ct_hu + noise).astype(np.float32))

    def line_integrals(self, hu: np.ndarray, pixel_mm: float) -> np.ndarray:
        """Noise-free ``p`` (bins x views) for the square, padded slice of ``hu``."""
        square, _ = projection.pad_square(projection.mu_from_hu(hu, self.mu_water_per_cm))
        theta = projection.angles(self.views)
        return projection.line_integrals(square, pixel_mm, theta, self.projection_downsample)

    def noise_hu(
        self, hu: np.ndarray, pixel_mm: float, fraction: float, rng: np.random.Generator
    ) -> np.ndarray:
        """The inserted noise (HU) on the slice grid."""
        p = self.line_integrals(hu, pixel_mm)
        full = self.i0 * np.exp(-p)
        photons = rng.poisson(full)
        quantum = rng.binomial(photons, fraction) - fraction * photons
        electronic = rng.normal(0.0, self.electronic_sigma * np.sqrt(1.0 - fraction**2), p.shape)
        expected = fraction * full
        reduced = np.maximum(expected + quantum + electronic, MIN_QUANTA)
        variance = (
            fraction * (1.0 - fraction) * full + (1.0 - fraction**2) * self.electronic_sigma**2
        ) / expected**2
        d = -np.log(reduced / expected) - variance / 2.0
        square, offset = projection.pad_square(hu)
        mu_noise = projection.filtered_back_projection(
            d / (pixel_mm / 10.0), projection.angles(self.views), square.shape[0], self.filter_name
        )
        return projection.crop(mu_noise * 1000.0 / self.mu_water_per_cm, offset, hu.shape)


DISTORTION = register_distortion(
    Distortion(
        name=NAME,
        domain="ct_hu",
        parameter=Parameter("fraction", "of the full-dose mAs", 1.0, 1e-3, 1.0),
        summary="lower CT dose: Poisson + electronic noise inserted in the projections, FBP",
        apply=CtDoseModel(),
        configure=keyword_configure(NAME, CtDoseModel),
    )
)
