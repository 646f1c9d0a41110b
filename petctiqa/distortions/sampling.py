"""Exact inversion sampling of discrete distributions, shared by the fused-image noise stages.

Discrete distributions are sampled by inversion with 48-bit uniforms: a 16-bit draw picks a
cell of a precomputed lookup table, which is final for all cells that no CDF threshold crosses
(> 99 % of draws); the few draws in a crossed cell take 32 more random bits and are resolved
exactly with ``searchsorted``. Probabilities are therefore exact to 2**-48.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petctiqa.errors import PetctiqaError

FINE_BITS = 32
COARSE_BITS = 16
UNIFORM_BITS = COARSE_BITS + FINE_BITS
UNIFORM_SCALE = float(2**UNIFORM_BITS)
_UNRESOLVED = np.iinfo(np.int16).min


def check_rgb(image: np.ndarray) -> None:
    """Refuse anything but an 8-bit RGB image (rows, cols, 3)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise PetctiqaError(
            f"distortions need an 8-bit RGB image (rows, cols, 3) uint8, got "
            f"{image.dtype} {image.shape}"
        )


def uniform_uint16(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` i.i.d. uniform 16-bit integers (raw 64-bit generator output split in four)."""
    words = rng.bit_generator.random_raw((count + 3) // 4)
    return words.astype("<u8", copy=False).view("<u2")[:count]


@dataclass(frozen=True, eq=False)
class InverseCdfTable:
    """Inversion sampler for ``rows`` discrete distributions over consecutive integers.

    Row ``r`` takes values ``first + m`` (m = 0..K-1) with
    ``P(X <= first + m) = thresholds[r, m] / 2**48`` (``thresholds[:, K-1]`` = 2**48).
    ``coarse[r * 2**bits + c]`` is the value ``first + m`` for the cells ``c`` of 48-bit uniforms
    (top ``bits`` bits) that one value covers entirely, and ``unresolved`` for cells that a
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
    def from_cdf(cls, cdf: np.ndarray, first: int, coarse_bits: int) -> InverseCdfTable:
        """``cdf[r, m] = P(X_r <= first + m)`` (float64, last column 1)."""
        rows, width = cdf.shape
        scaled = np.rint(np.clip(cdf, 0.0, 1.0) * UNIFORM_SCALE).astype(np.uint64)
        scaled[:, -1] = np.uint64(2**UNIFORM_BITS)
        scaled = np.maximum.accumulate(scaled, axis=1)
        shift = UNIFORM_BITS - coarse_bits
        cells = np.arange(2**coarse_bits, dtype=np.uint64)
        low = cells << np.uint64(shift)
        high = ((cells + np.uint64(1)) << np.uint64(shift)) - np.uint64(1)
        coarse = np.empty((rows, 2**coarse_bits), dtype=np.int16)
        for r in range(rows):  # once per table (<= 256 rows), not per pixel
            m_low = np.searchsorted(scaled[r], low, side="right")
            m_high = np.searchsorted(scaled[r], high, side="right")
            coarse[r] = np.where(m_low == m_high, m_low + first, _UNRESOLVED)
        offsets = np.arange(rows, dtype=np.uint64)[:, None] << np.uint64(UNIFORM_BITS)
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
        draws = uniform_uint16(rng, count)
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
        fine = rng.integers(0, 2**FINE_BITS, draws.size, dtype=np.uint64)
        query = (draws.astype(np.uint64) << np.uint64(FINE_BITS)) | fine
        row = np.zeros(draws.size, np.int64)
        if rows is not None:
            row = rows.astype(np.int64)
            query += row.astype(np.uint64) << np.uint64(UNIFORM_BITS)
        position = np.searchsorted(self.flat_thresholds, query, side="right")
        return position - row * self.width + self.first
