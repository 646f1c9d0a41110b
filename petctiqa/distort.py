"""The three PET-CT-IQA-DS distortions, exact and vectorised: Poisson -> Gaussian -> JPEG.

Everything works on a fused 8-bit RGB image (``uint8``, shape ``(rows, cols, 3)``), channel by
channel, on the 0..255 scale:

1. **Poisson stage**, two forms (``DistortionSpec.poisson_form``):

   - ``"impulse"`` (the published PET-CT-IQA-DS form): with clean channel value ``I``, draw
     ``k ~ Poisson(lambda * I / 255)``; where ``k > 0`` the channel becomes 255, else it is
     unchanged. So each channel value turns white independently with probability
     ``p(I) = 1 - exp(-lambda * I / 255)`` (``poisson_value`` = lambda). Sparse coloured impulses.
   - ``"shot"`` (physical photon-counting noise): ``k ~ Poisson(I / 255 * peak)`` and the new value
     is ``min(255, floor(255 * k / peak + 0.5))`` (round half up, clipped at 255;
     ``poisson_value`` = peak, the expected photon count of a white channel). Dense; mean ``I``,
     variance ``255 * I / peak`` (+ the rounding's ~1/12) away from the 255 clip.

2. **Gaussian**: ``clip(x + N(0, sigma), 0, 255)`` per channel, then truncation to uint8 (as
   ``astype`` does; not rounding). Because ``floor(I + x) = I + floor(x)`` for integer ``I``, this
   equals ``clip(I + d, 0, 255)`` with the integer noise ``d = floor(sigma * z)``, whose
   distribution does not depend on ``I``; it is sampled from an exact table (below).

3. **JPEG** at ``jpeg_quality`` with libjpeg's standard tables, baseline, the requested chroma
   subsampling (4:2:0 by default). OpenCV's and Pillow's encoders give byte-identical files
   (both libjpeg-turbo; checked in the tests), OpenCV is used because it is faster.

Sampling. Discrete distributions are sampled by inversion with 48-bit uniforms: a 16-bit draw
picks a cell of a precomputed lookup table, which is final for all cells that no CDF threshold
crosses (> 99 % of draws); the few draws in a crossed cell take 32 more random bits and are
resolved exactly with ``searchsorted``. Probabilities are therefore exact to 2**-48. The impulse
form draws candidate positions at the highest rate (binomial count + distinct uniform positions,
i.e. i.i.d. Bernoulli(p_max)) and thins each candidate to its own ``p(I)`` with a float64
uniform - exact, and ~100x fewer draws than one per channel value.

:func:`reference_distort_image` is the straightforward NumPy/PIL implementation of the same
distortions, kept only as the slow baseline for benchmarks and cross-checks.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from petctiqa.errors import PetctiqaError
from petctiqa.png import encode_png_rgb
from petctiqa.protocol import (
    CHROMA_SUBSAMPLINGS,
    IMAGE_FORMATS,
    POISSON_FORMS,
    DistortionSettings,
)

_CV_SUBSAMPLING = {
    "4:4:4": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    "4:2:2": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "4:2:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
}
_PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}

_FINE_BITS = 32
_COARSE_BITS = 16
_UNIFORM_BITS = _COARSE_BITS + _FINE_BITS
_UNIFORM_SCALE = float(2**_UNIFORM_BITS)
_DENSE_IMPULSE_RATE = 0.05
"""Above this per-value probability the impulse form draws one uniform per channel value."""


# ----------------------------------------------------------------------------- specification


@dataclass(frozen=True)
class DistortionSpec:
    """One cell of the distortion grid: the level indices and the parameter values they stand for.

    ``poisson_value`` is lambda for the impulse form and the photon peak for the shot form;
    0 means no Poisson stage. ``gaussian_sigma`` is on the 0..255 scale (0 = none).
    """

    poisson_level: int
    gaussian_level: int
    jpeg_level: int
    poisson_form: str
    poisson_value: float
    gaussian_sigma: float
    jpeg_quality: int

    @property
    def code(self) -> str:
        """Short level code used in image names, e.g. ``"p1g0j2"``."""
        return f"p{self.poisson_level}g{self.gaussian_level}j{self.jpeg_level}"

    @property
    def is_reference(self) -> bool:
        """True for the undistorted cell (no noise; only the JPEG at the level-0 quality)."""
        return self.poisson_value == 0 and self.gaussian_sigma == 0 and self.jpeg_level == 0


def distortion_grid(settings: DistortionSettings) -> list[DistortionSpec]:
    """All level combinations (27 for 3 levels each), ordered by poisson, gaussian, jpeg level."""
    return [
        DistortionSpec(
            poisson_level=p,
            gaussian_level=g,
            jpeg_level=j,
            poisson_form=settings.poisson_form,
            poisson_value=float(settings.poisson_levels[p]),
            gaussian_sigma=float(settings.gaussian_sigmas[g]),
            jpeg_quality=int(settings.jpeg_qualities[j]),
        )
        for p in range(len(settings.poisson_levels))
        for g in range(len(settings.gaussian_sigmas))
        for j in range(len(settings.jpeg_qualities))
    ]


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise PetctiqaError(
            f"distortions need an 8-bit RGB image (rows, cols, 3) uint8, got "
            f"{image.dtype} {image.shape}"
        )


def _check_spec(spec: DistortionSpec) -> None:
    if spec.poisson_form not in POISSON_FORMS:
        raise PetctiqaError(
            f"poisson form must be one of {', '.join(POISSON_FORMS)}, got {spec.poisson_form!r}"
        )
    if not spec.poisson_value >= 0 or not spec.gaussian_sigma >= 0:
        raise PetctiqaError(f"noise parameters must be >= 0, got {spec}")
    if not 1 <= spec.jpeg_quality <= 100:
        raise PetctiqaError(f"jpeg quality must be 1..100, got {spec.jpeg_quality}")


# ----------------------------------------------------------------------------- exact sampler


_UNRESOLVED = np.iinfo(np.int16).min


@dataclass(frozen=True, eq=False)
class _InverseCdfTable:
    """Inversion sampler for ``rows`` discrete distributions over consecutive integers.

    Row ``r`` takes values ``first + m`` (m = 0..K-1) with
    ``P(X <= first + m) = thresholds[r, m] / 2**48`` (``thresholds[:, K-1]`` = 2**48).
    ``coarse[r * 2**bits + c]`` is the value ``first + m`` for the cells ``c`` of 48-bit uniforms
    (top ``bits`` bits) that one value covers entirely, and ``_UNRESOLVED`` for cells that a
    threshold crosses.
    """

    first: int
    coarse_bits: int
    coarse: np.ndarray
    """(rows * 2**coarse_bits,): int8 when every resolved value fits (a table a quarter of the
    L2 cache is twice as fast to gather from as int16), else int16."""
    unresolved: int
    """The sentinel in ``coarse`` for a crossed cell (the dtype's minimum)."""
    flat_thresholds: np.ndarray
    """uint64, (rows * K,): thresholds of row r offset by r * 2**48 (one sorted array)."""
    width: int
    """K, the number of values per row."""

    @classmethod
    def from_cdf(cls, cdf: np.ndarray, first: int, coarse_bits: int) -> _InverseCdfTable:
        """``cdf[r, m] = P(X_r <= first + m)`` (float64, last column 1)."""
        rows, width = cdf.shape
        scaled = np.rint(np.clip(cdf, 0.0, 1.0) * _UNIFORM_SCALE).astype(np.uint64)
        scaled[:, -1] = np.uint64(2**_UNIFORM_BITS)
        scaled = np.maximum.accumulate(scaled, axis=1)
        shift = _UNIFORM_BITS - coarse_bits
        cells = np.arange(2**coarse_bits, dtype=np.uint64)
        low = cells << np.uint64(shift)
        high = ((cells + np.uint64(1)) << np.uint64(shift)) - np.uint64(1)
        coarse = np.empty((rows, 2**coarse_bits), dtype=np.int16)
        for r in range(rows):  # once per table (<= 256 rows), not per pixel
            m_low = np.searchsorted(scaled[r], low, side="right")
            m_high = np.searchsorted(scaled[r], high, side="right")
            coarse[r] = np.where(m_low == m_high, m_low + first, _UNRESOLVED)
        offsets = np.arange(rows, dtype=np.uint64)[:, None] << np.uint64(_UNIFORM_BITS)
        coarse = coarse.reshape(-1)
        unresolved = _UNRESOLVED
        resolved = coarse[coarse != _UNRESOLVED]
        if resolved.size and resolved.min() >= -127 and resolved.max() <= 127:
            unresolved = int(np.iinfo(np.int8).min)
            coarse = np.where(coarse == _UNRESOLVED, unresolved, coarse).astype(np.int8)
        return cls(
            first=first,
            coarse_bits=coarse_bits,
            coarse=coarse,
            unresolved=unresolved,
            flat_thresholds=(scaled + offsets).reshape(-1),
            width=width,
        )

    def sample(
        self, rng: np.random.Generator, count: int, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """``count`` draws as int8 or int16 values; ``rows`` (one per draw, e.g. uint8) picks
        the rows."""
        draws = _uniform_uint16(rng, count)
        cell = draws >> np.uint16(16 - self.coarse_bits) if self.coarse_bits < 16 else draws
        if rows is not None:
            cell = (rows.astype(np.int32) << self.coarse_bits) | cell
        values = np.take(self.coarse, cell)
        crossed = np.flatnonzero(values == self.unresolved)
        if crossed.size:
            values = values.astype(np.int16, copy=False)  # a crossed cell may hold +-128
            rows_crossed = None if rows is None else rows[crossed]
            values[crossed] = self.resolve_crossed(draws[crossed], rng, rows_crossed)
        return values

    def resolve_crossed(
        self, draws: np.ndarray, rng: np.random.Generator, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Exact values (int64) for 16-bit ``draws`` whose coarse cell a threshold crosses:
        each takes 32 more random bits (in the order given) and is found by ``searchsorted``."""
        fine = rng.integers(0, 2**_FINE_BITS, draws.size, dtype=np.uint64)
        query = (draws.astype(np.uint64) << np.uint64(_FINE_BITS)) | fine
        row = np.zeros(draws.size, np.int64)
        if rows is not None:
            row = rows.astype(np.int64)
            query += row.astype(np.uint64) << np.uint64(_UNIFORM_BITS)
        position = np.searchsorted(self.flat_thresholds, query, side="right")
        return position - row * self.width + self.first


def _uniform_uint16(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` i.i.d. uniform 16-bit integers (raw 64-bit generator output split in four)."""
    words = rng.bit_generator.random_raw((count + 3) // 4)
    return words.astype("<u8", copy=False).view("<u2")[:count]


@functools.lru_cache(maxsize=16)
def _gaussian_step_table(sigma: float) -> _InverseCdfTable:
    """Table for the integer noise ``d = clip(floor(sigma * z), -255, 255)``, z ~ N(0, 1)."""
    from scipy import special  # here, not at the top: ~0.3 s that only the workers need

    values = np.arange(-255, 256)
    cdf = special.ndtr((values + 1) / sigma)[None, :]  # P(floor(sigma z) <= v) = Phi((v+1)/sigma)
    cdf[0, -1] = 1.0
    return _InverseCdfTable.from_cdf(cdf, first=-255, coarse_bits=_COARSE_BITS)


@functools.lru_cache(maxsize=8)
def _shot_table(peak: float) -> _InverseCdfTable:
    """Per-intensity table for ``min(255, floor(255 k / peak + 0.5))``, ``k ~ Poisson(I peak/255)``."""
    from scipy import special

    outputs = np.arange(256)
    # Largest k with floor(255 k / peak + 0.5) <= v  <=>  255 k / peak + 0.5 < v + 1.
    k_max = np.ceil((outputs + 0.5) * peak / 255.0) - 1.0
    means = np.arange(256)[:, None] * (peak / 255.0)
    cdf = special.pdtr(k_max[None, :], means)  # P(k <= k_max) for mean I*peak/255
    cdf = np.where(k_max[None, :] < 0, 0.0, cdf)
    cdf[:, -1] = 1.0
    return _InverseCdfTable.from_cdf(cdf, first=0, coarse_bits=12)


# ----------------------------------------------------------------------------- noise stages


def impulse_probabilities(lam: float) -> np.ndarray:
    """``p[I] = 1 - exp(-lam * I / 255)`` for I = 0..255 (float64, 256 entries)."""
    return -np.expm1(-lam * np.arange(256) / 255.0)


def apply_impulse_noise(image: np.ndarray, lam: float, rng: np.random.Generator) -> np.ndarray:
    """Published "Poisson" stage: each channel value I becomes 255 with probability p(I).

    Returns a new uint8 array (the input is not modified). Exact: candidates are i.i.d.
    Bernoulli(p(255)) per channel value, each then kept with probability p(I)/p(255).
    """
    _check_image(image)
    out = image.copy()
    if lam <= 0:
        return out
    flat = out.reshape(-1)
    table = impulse_probabilities(lam)
    rate = table[255]
    if rate > _DENSE_IMPULSE_RATE:
        hit = rng.random(flat.size) < table[flat]
        flat[hit] = 255
        return out
    count = rng.binomial(flat.size, rate)
    candidates = rng.choice(flat.size, size=count, replace=False, shuffle=False)
    keep = rng.random(count) * rate < table[flat[candidates]]
    flat[candidates[keep]] = 255
    return out


def apply_shot_noise(image: np.ndarray, peak: float, rng: np.random.Generator) -> np.ndarray:
    """Dense Poisson shot noise: ``min(255, round_half_up(255 * Poisson(I / 255 * peak) / peak))``.

    ``peak`` is the expected count of a white (255) channel; lower peak = more noise.
    """
    _check_image(image)
    if peak <= 0:
        return image.copy()
    table = _shot_table(float(peak))
    flat = image.reshape(-1)
    return table.sample(rng, flat.size, rows=flat).astype(np.uint8).reshape(image.shape)


def apply_gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``clip(I + N(0, sigma), 0, 255)`` truncated to uint8, per channel (new array)."""
    _check_image(image)
    if sigma <= 0:
        return image.copy()
    table = _gaussian_step_table(float(sigma))
    flat = np.ascontiguousarray(image).reshape(-1)
    kernel = _compiled_kernel()
    # the kernel indexes the table with the 16-bit draws themselves and has an int8 signature
    if kernel is None or table.coarse_bits != 16 or table.coarse.dtype != np.int8:
        return _gaussian_noise_numpy(flat, table, rng).reshape(image.shape)
    return _gaussian_noise_compiled(flat, table, rng, kernel).reshape(image.shape)


def _gaussian_noise_numpy(
    flat: np.ndarray, table: _InverseCdfTable, rng: np.random.Generator
) -> np.ndarray:
    steps = table.sample(rng, flat.size)
    total = np.add(flat, steps, dtype=np.int16)  # |I + d| <= 510 fits int16
    np.clip(total, 0, 255, out=total)
    return total.astype(np.uint8)


def _gaussian_noise_compiled(
    flat: np.ndarray, table: _InverseCdfTable, rng: np.random.Generator, kernel: Callable
) -> np.ndarray:
    """Same draws in the same order as :func:`_gaussian_noise_numpy`, so the same bytes."""
    draws = _uniform_uint16(rng, flat.size)
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
def _compiled_kernel() -> Callable | None:
    """The numba kernel of :mod:`petctiqa.noise_kernel`, or None (then NumPy does the work)."""
    from petctiqa.noise_kernel import compiled_add_table_steps

    return compiled_add_table_steps


def apply_noise(image: np.ndarray, spec: DistortionSpec, rng: np.random.Generator) -> np.ndarray:
    """Poisson stage then Gaussian stage (no JPEG). Returns ``image`` itself if both are off."""
    _check_image(image)
    _check_spec(spec)
    out = image
    if spec.poisson_value > 0:
        if spec.poisson_form == "impulse":
            out = apply_impulse_noise(out, spec.poisson_value, rng)
        else:
            out = apply_shot_noise(out, spec.poisson_value, rng)
    if spec.gaussian_sigma > 0:
        out = apply_gaussian_noise(out, spec.gaussian_sigma, rng)
    return out


# ----------------------------------------------------------------------------- encoding


def encode_jpeg(image: np.ndarray, quality: int, subsampling: str = "4:2:0") -> bytes:
    """Baseline JPEG with libjpeg's standard tables (byte-identical to PIL's ``save``)."""
    _check_image(image)
    if subsampling not in _CV_SUBSAMPLING:
        raise PetctiqaError(
            f"subsampling must be one of {', '.join(CHROMA_SUBSAMPLINGS)}, got {subsampling!r}"
        )
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        int(quality),
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        _CV_SUBSAMPLING[subsampling],
    ]
    ok, buffer = cv2.imencode(".jpg", bgr, params)
    if not ok:  # pragma: no cover - OpenCV only fails on invalid input, checked above
        raise PetctiqaError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buffer.tobytes()


def decode_image(data: bytes) -> np.ndarray:
    """Decode JPEG or PNG bytes to an RGB uint8 array (same pixels as PIL's decoder)."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise PetctiqaError("cannot decode image bytes (not a JPEG or PNG file)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _encode_file(noisy: np.ndarray, quality: int, image_format: str, subsampling: str) -> bytes:
    if image_format not in IMAGE_FORMATS:
        raise PetctiqaError(
            f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}"
        )
    jpeg = encode_jpeg(noisy, quality, subsampling)
    if image_format == "jpeg":
        return jpeg
    return encode_png_rgb(decode_image(jpeg), "sub")


def distort_image(
    image: np.ndarray,
    spec: DistortionSpec,
    rng: np.random.Generator,
    image_format: str = "jpeg",
    subsampling: str = "4:2:0",
) -> bytes:
    """Poisson -> Gaussian -> JPEG on a fused uint8 RGB image; returns the encoded file.

    ``image_format="jpeg"``: the JPEG at ``spec.jpeg_quality`` (as published).
    ``"png"``: a lossless PNG of the decoded JPEG pixels (same pixels, no second loss).
    All randomness comes from ``rng`` (use ``petctiqa.seeding.rng_for(seed, image_key)``).
    """
    noisy = apply_noise(image, spec, rng)
    return _encode_file(noisy, spec.jpeg_quality, image_format, subsampling)


# ----------------------------------------------------------------------------- slow reference


def reference_distort_image(
    image: np.ndarray,
    spec: DistortionSpec,
    rng: np.random.Generator,
    image_format: str = "jpeg",
    subsampling: str = "4:2:0",
) -> bytes:
    """SLOW straightforward reference of :func:`distort_image`, for benchmarks and cross-checks.

    Same semantics (same distributions, same encoder settings), but drawn the obvious way:
    ``rng.poisson`` for every channel value, a float64 ``rng.normal`` for every channel value and
    PIL for JPEG/PNG. It does not produce the same random stream as :func:`distort_image`, so
    outputs match in distribution, not byte for byte (they are identical when no noise is on).
    """
    _check_image(image)
    _check_spec(spec)
    pixels = image
    if spec.poisson_value > 0:
        if spec.poisson_form == "impulse":
            counts = rng.poisson(spec.poisson_value * pixels.astype(np.float64) / 255.0)
            pixels = np.where(counts > 0, 255, pixels).astype(np.uint8)
        else:
            counts = rng.poisson(pixels.astype(np.float64) / 255.0 * spec.poisson_value)
            scaled = np.floor(255.0 * counts / spec.poisson_value + 0.5)
            pixels = np.minimum(scaled, 255).astype(np.uint8)
    if spec.gaussian_sigma > 0:
        noisy = pixels.astype(np.float64) + rng.normal(0.0, spec.gaussian_sigma, pixels.shape)
        pixels = np.clip(noisy, 0, 255).astype(np.uint8)
    from PIL import Image

    if subsampling not in _PIL_SUBSAMPLING:
        raise PetctiqaError(
            f"subsampling must be one of {', '.join(CHROMA_SUBSAMPLINGS)}, got {subsampling!r}"
        )
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(
        buffer, "JPEG", quality=spec.jpeg_quality, subsampling=_PIL_SUBSAMPLING[subsampling]
    )
    if image_format == "jpeg":
        return buffer.getvalue()
    if image_format != "png":
        raise PetctiqaError(
            f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}"
        )
    decoded = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    png = io.BytesIO()
    decoded.save(png, "PNG")
    return png.getvalue()
