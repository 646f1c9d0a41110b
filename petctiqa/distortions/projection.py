"""Shared pieces of the projection-domain models: attenuation from HU, the working grid, and
scikit-image's parallel-beam projector (``radon``) and filtered back-projection (``iradon``).

Everything is 2-D, one slice at a time, parallel beam over 180 degrees. ``radon`` sums pixel
values along each ray (so a line integral in physical units is ``radon(mu) * pixel size``) and
``iradon`` inverts it in the same pixel units. Images are zero-padded to a square first
(air outside the slice: no activity, no attenuation), and cropped back afterwards.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import cv2
import numpy as np

from petctiqa.errors import PetctiqaError

MU_WATER_511_PER_CM = 0.096
"""Linear attenuation of water at 511 keV (1/cm); the value GE writes in the STS_001 headers
(AttenuationCorrectionMethod 'measured,, 0.096000 cm-1')."""
CARNEY_120KVP = (5.10e-5, 4.71e-2, 1047.0)
"""Bilinear HU -> mu(511 keV) above the break point for 120 kVp (Carney et al., Med Phys 33
(2006) 976): mu = a (HU + 1000) + b for HU + 1000 > break point, else 9.6e-5 (HU + 1000)."""
FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def mu_511_from_hu(hu: np.ndarray) -> np.ndarray:
    """PET attenuation map (1/cm at 511 keV) from CT HU, bilinear (Carney 2006, 120 kVp)."""
    a, b, breakpoint = CARNEY_120KVP
    n = np.asarray(hu, dtype=np.float64) + 1000.0
    mu = np.where(n <= breakpoint, MU_WATER_511_PER_CM / 1000.0 * n, a * n + b)
    return np.clip(mu, 0.0, None)


def mu_from_hu(hu: np.ndarray, mu_water_per_cm: float) -> np.ndarray:
    """CT attenuation (1/cm) at the effective energy where water has ``mu_water_per_cm``:
    ``mu = mu_water (1 + HU / 1000)``, clipped at 0 (the definition of HU, inverted)."""
    return np.clip(mu_water_per_cm * (1.0 + np.asarray(hu, np.float64) / 1000.0), 0.0, None)


def check_filter(filter_name: str) -> None:
    if filter_name not in FILTERS:
        raise PetctiqaError(f"filter must be one of {', '.join(FILTERS)}, got {filter_name!r}")


def angles(views: int) -> np.ndarray:
    """``views`` projection angles (degrees) evenly over [0, 180)."""
    if views < 2:
        raise PetctiqaError(f"views must be >= 2, got {views}")
    return np.linspace(0.0, 180.0, int(views), endpoint=False)


def pad_square(image: np.ndarray, fill: float = 0.0) -> tuple[np.ndarray, tuple[int, int]]:
    """Centre ``image`` in a zero (``fill``) square; returns it and the top-left offset."""
    rows, cols = image.shape
    side = max(rows, cols)
    top, left = (side - rows) // 2, (side - cols) // 2
    out = np.full((side, side), fill, dtype=np.float64)
    out[top : top + rows, left : left + cols] = image
    return out, (top, left)


def crop(image: np.ndarray, offset: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    top, left = offset
    return image[top : top + shape[0], left : left + shape[1]]


def to_work_grid(image: np.ndarray, pixel_mm: float, work_pixel_mm: float) -> np.ndarray:
    """Area-average a square image onto square pixels of ``work_pixel_mm`` (same field)."""
    side = image.shape[0]
    work_side = max(8, int(round(side * pixel_mm / work_pixel_mm)))
    if work_side == side:
        return image.astype(np.float64, copy=True)
    interpolation = cv2.INTER_AREA if work_side < side else cv2.INTER_LINEAR
    return cv2.resize(image, (work_side, work_side), interpolation=interpolation).astype(np.float64)


def from_work_grid(image: np.ndarray, side: int) -> np.ndarray:
    """Bilinear resize of a square work-grid image back to ``side`` x ``side`` pixels."""
    if image.shape[0] == side:
        return image
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)


_PROJECTIONS: OrderedDict[tuple, np.ndarray] = OrderedDict()
PROJECTION_CACHE_SIZE = 8
"""Sinograms kept by :func:`forward_project`: a dataset build applies each model at several
levels to the same slice, and the noise-free projections (the CT's line integrals, the PET's
attenuation and activity) do not depend on the level."""


def forward_project(image: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Ray sums (bins x views) of a square image, in pixel units (scikit-image ``radon``).

    Deterministic, so the last few results are kept, keyed by the image's and the angles'
    bytes; the returned array is read-only (callers compute new arrays from it)."""
    from skimage.transform import radon  # lazy: plug-ins import this; keep them light

    key = (
        image.shape,
        image.dtype.str,
        hashlib.sha1(np.ascontiguousarray(image).data).hexdigest(),
        hashlib.sha1(np.ascontiguousarray(theta, dtype=np.float64).data).hexdigest(),
    )
    cached = _PROJECTIONS.get(key)
    if cached is not None:
        _PROJECTIONS.move_to_end(key)
        return cached
    sinogram = radon(image, theta=theta, circle=False, preserve_range=True)
    sinogram.flags.writeable = False
    _PROJECTIONS[key] = sinogram
    while len(_PROJECTIONS) > PROJECTION_CACHE_SIZE:
        _PROJECTIONS.popitem(last=False)
    return sinogram


def filtered_back_projection(
    sinogram: np.ndarray, theta: np.ndarray, side: int, filter_name: str
) -> np.ndarray:
    """FBP (scikit-image ``iradon``, linear interpolation) onto a ``side`` x ``side`` grid."""
    from skimage.transform import iradon  # lazy: plug-ins import this; keep them light

    check_filter(filter_name)
    return iradon(
        sinogram,
        theta=theta,
        output_size=side,
        filter_name=filter_name,
        interpolation="linear",
        circle=False,
        preserve_range=True,
    )


def line_integrals(
    mu_square: np.ndarray, pixel_mm: float, theta: np.ndarray, downsample: int
) -> np.ndarray:
    """``p = pixel * radon(mu)`` (mu in 1/cm) with the slice's bins, projected on a grid
    ``downsample`` times coarser and interpolated along the bins (cheaper; ``p`` is smooth)."""
    side = mu_square.shape[0]
    coarse = to_work_grid(mu_square, pixel_mm, pixel_mm * downsample)
    coarse_mm = pixel_mm * side / coarse.shape[0]
    p_coarse = forward_project(coarse, theta) * coarse_mm / 10.0
    bins = forward_project(np.zeros((side, side)), theta[:1]).shape[0]
    # bin centres of both sinograms in mm from the rotation centre
    fine_at = (np.arange(bins) - bins // 2) * pixel_mm
    coarse_at = (np.arange(p_coarse.shape[0]) - p_coarse.shape[0] // 2) * coarse_mm
    return np.stack(
        [np.interp(fine_at, coarse_at, p_coarse[:, a], 0.0, 0.0) for a in range(len(theta))],
        axis=1,
    )
