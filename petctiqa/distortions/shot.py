"""Dense Poisson shot noise on the fused RGB image (the physical alternative to the impulse form).

``k ~ Poisson(I / 255 * peak)`` and the new value is ``min(255, floor(255 * k / peak + 0.5))``
(round half up, clipped at 255); ``peak`` is the expected photon count of a white (255) channel.
Mean ``I``, variance ``255 * I / peak`` (+ the rounding's ~1/12) away from the 255 clip.
"""

from __future__ import annotations

import functools

import numpy as np

from petctiqa.distortions.registry import Distortion, Parameter, register_distortion
from petctiqa.distortions.sampling import InverseCdfTable, check_rgb

NAME = "shot_poisson"


@functools.lru_cache(maxsize=8)
def shot_table(peak: float) -> InverseCdfTable:
    """Per-intensity table for ``min(255, floor(255 k / peak + 0.5))``, ``k ~ Poisson(I peak/255)``."""
    from scipy import special  # lazy: protocol parsing imports every plug-in; no SciPy there

    outputs = np.arange(256)
    # Largest k with floor(255 k / peak + 0.5) <= v  <=>  255 k / peak + 0.5 < v + 1.
    k_max = np.ceil((outputs + 0.5) * peak / 255.0) - 1.0
    means = np.arange(256)[:, None] * (peak / 255.0)
    cdf = special.pdtr(k_max[None, :], means)  # P(k <= k_max) for mean I*peak/255
    cdf = np.where(k_max[None, :] < 0, 0.0, cdf)
    cdf[:, -1] = 1.0
    return InverseCdfTable.from_cdf(cdf, first=0, coarse_bits=12)


def apply_shot_noise(image: np.ndarray, peak: float, rng: np.random.Generator) -> np.ndarray:
    """Dense shot noise; ``peak <= 0`` means none (a copy). Lower peak = more noise."""
    check_rgb(image)
    if peak <= 0:
        return image.copy()
    table = shot_table(float(peak))
    flat = image.reshape(-1)
    return table.sample(rng, flat.size, rows=flat).astype(np.uint8).reshape(image.shape)


DISTORTION = register_distortion(
    Distortion(
        name=NAME,
        domain="fused_rgb",
        parameter=Parameter("peak", "expected counts of a white channel (0 = off)", 0.0, 0.0),
        summary="dense photon-counting noise: 255 * Poisson(I/255 * peak) / peak, rounded",
        apply=apply_shot_noise,
    )
)
