"""The published PET-CT-IQA-DS "Poisson" stage: sparse white impulses on the fused RGB image.

With clean channel value ``I``, draw ``k ~ Poisson(lambda * I / 255)``; where ``k > 0`` the
channel becomes 255, else it is unchanged. So each channel value turns white independently with
probability ``p(I) = 1 - exp(-lambda * I / 255)``. Exact, and far fewer draws than one per
value: candidate positions are drawn at the highest rate (binomial count + distinct uniform
positions, i.e. i.i.d. Bernoulli(p_max)) and each candidate is thinned to its own ``p(I)`` with
a float64 uniform.
"""

from __future__ import annotations

import numpy as np

from petctiqa.distortions.registry import Distortion, Parameter, register_distortion
from petctiqa.distortions.sampling import check_rgb

NAME = "impulse_poisson"
DENSE_IMPULSE_RATE = 0.05
"""Above this per-value probability the impulse form draws one uniform per channel value."""


def impulse_probabilities(lam: float) -> np.ndarray:
    """``p[I] = 1 - exp(-lam * I / 255)`` for I = 0..255 (float64, 256 entries)."""
    return -np.expm1(-lam * np.arange(256) / 255.0)


def apply_impulse_noise(image: np.ndarray, lam: float, rng: np.random.Generator) -> np.ndarray:
    """Each channel value I becomes 255 with probability p(I); a new uint8 array."""
    check_rgb(image)
    out = image.copy()
    if lam <= 0:
        return out
    flat = out.reshape(-1)
    table = impulse_probabilities(lam)
    rate = table[255]
    if rate > DENSE_IMPULSE_RATE:
        hit = rng.random(flat.size) < table[flat]
        flat[hit] = 255
        return out
    count = rng.binomial(flat.size, rate)
    candidates = rng.choice(flat.size, size=count, replace=False, shuffle=False)
    keep = rng.random(count) * rate < table[flat[candidates]]
    flat[candidates[keep]] = 255
    return out


DISTORTION = register_distortion(
    Distortion(
        name=NAME,
        domain="fused_rgb",
        parameter=Parameter("lambda", "impulse rate at white (1/255 per grey level)", 0.0, 0.0),
        summary="published 'Poisson' form: a channel becomes 255 where Poisson(lambda*I/255) > 0",
        apply=apply_impulse_noise,
    )
)
