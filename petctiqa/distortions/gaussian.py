"""Gaussian noise on the fused RGB image: ``clip(I + N(0, sigma), 0, 255)`` truncated to uint8.

Per channel, then truncation (as ``astype`` does; not rounding), as in the published data.
Because ``floor(I + x) = I + floor(x)`` for integer ``I``, this equals ``clip(I + d, 0, 255)``
with the integer noise ``d = floor(sigma * z)``, whose distribution does not depend on ``I``;
it is sampled from one exact table. With numba installed the lookup-add-clip loop runs compiled
(:mod:`petctiqa.noise_kernel`); it consumes the same draws in the same order, so the images are
byte-identical with and without it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from petctiqa.distortions.registry import Distortion, Parameter, register_distortion
from petctiqa.distortions.sampling import COARSE_BITS, InverseCdfTable, check_rgb, uniform_uint16

NAME = "gaussian"


@functools.lru_cache(maxsize=16)
def gaussian_step_table(sigma: float) -> InverseCdfTable:
    """Table for the integer noise ``d = clip(floor(sigma * z), -255, 255)``, z ~ N(0, 1)."""
    from scipy import special  # lazy: protocol parsing imports every plug-in; no SciPy there

    values = np.arange(-255, 256)
    cdf = special.ndtr((values + 1) / sigma)[None, :]  # P(floor(sigma z) <= v) = Phi((v+1)/sigma)
    cdf[0, -1] = 1.0
    return InverseCdfTable.from_cdf(cdf, first=-255, coarse_bits=COARSE_BITS)


def apply_gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``clip(I + N(0, sigma), 0, 255)`` truncated to uint8, per channel (new array)."""
    check_rgb(image)
    if sigma <= 0:
        return image.copy()
    table = gaussian_step_table(float(sigma))
    flat = np.ascontiguousarray(image).reshape(-1)
    kernel = compiled_kernel()
    # the kernel indexes the table with the 16-bit draws themselves and has an int8 signature
    if kernel is None or table.coarse_bits != 16 or table.coarse.dtype != np.int8:
        return gaussian_noise_numpy(flat, table, rng).reshape(image.shape)
    return gaussian_noise_compiled(flat, table, rng, kernel).reshape(image.shape)


def gaussian_noise_numpy(
    flat: np.ndarray, table: InverseCdfTable, rng: np.random.Generator
) -> np.ndarray:
    steps = table.sample(rng, flat.size)
    total = np.add(flat, steps, dtype=np.int16)  # |I + d| <= 510 fits int16
    np.clip(total, 0, 255, out=total)
    return total.astype(np.uint8)


def gaussian_noise_compiled(
    flat: np.ndarray, table: InverseCdfTable, rng: np.random.Generator, kernel: Callable
) -> np.ndarray:
    """Same draws in the same order as :func:`gaussian_noise_numpy`, so the same bytes."""
    draws = uniform_uint16(rng, flat.size)
    out = np.empty_like(flat)
    crossed = np.empty(flat.size, np.intp)
    marker = table.coarse.dtype.type(table.unresolved)
    count = kernel(flat, draws, table.coarse, marker, out, crossed)
    if count:
        positions = crossed[:count]
        total = flat[positions] + table.resolve_crossed(draws[positions], rng)
        out[positions] = np.clip(total, 0, 255).astype(np.uint8)
    return out


@functools.cache
def compiled_kernel() -> Callable | None:
    """The numba kernel of :mod:`petctiqa.noise_kernel`, or None (then NumPy does the work)."""
    from petctiqa.noise_kernel import compiled_add_table_steps  # lazy: importing it compiles

    return compiled_add_table_steps


DISTORTION = register_distortion(
    Distortion(
        name=NAME,
        domain="fused_rgb",
        parameter=Parameter("sigma", "grey levels (0..255 scale)", 0.0, 0.0, 255.0),
        summary="additive Gaussian noise per RGB channel, clipped then truncated to uint8",
        apply=apply_gaussian_noise,
    )
)
