"""PET colour maps for fusion renders: value in [0, 1] -> RGB in [0, 1], black at zero uptake.

Every map here sends 0 to pure black, so a pixel without PET uptake keeps the pure grey of its
CT (R = G = B) after blending. Maps are piecewise linear, given by (position, R, G, B) knots.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from petctiqa.errors import ProtocolError

_KNOTS: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    # OpenCV COLORMAP_HOT (hot iron: black -> red -> yellow -> white); red saturates at 0.4,
    # green ramps 0.4..0.8, blue 0.8..1. This is the map the published images fit best.
    "hot": (
        (0.0, 0.0, 0.0, 0.0),
        (0.4, 1.0, 0.0, 0.0),
        (0.8, 1.0, 1.0, 0.0),
        (1.0, 1.0, 1.0, 1.0),
    ),
    # matplotlib 'hot' with its 0.0416 red offset at zero removed (masked at zero uptake).
    "hot_matplotlib": (
        (0.0, 0.0, 0.0, 0.0),
        (1e-9, 0.0416, 0.0, 0.0),
        (0.365079, 1.0, 0.0, 0.0),
        (0.746032, 1.0, 1.0, 0.0),
        (1.0, 1.0, 1.0, 1.0),
    ),
}

COLORMAP_NAMES = tuple(sorted(_KNOTS))


_CHUNK = 32768
"""Pixels per pass of :func:`colormap_planes`: its float64 temporaries stay in the CPU cache."""


@dataclass(frozen=True)
class _Piece:
    """Where a channel's colour is one formula: from knot position ``start`` up to the next
    piece. A flat piece is the constant ``value``; a ramp is np.interp's segment formula
    ``slope * (x - start) + value`` (float64, in that order)."""

    start: float
    value: float
    slope: float | None = None


@functools.cache
def _channel_pieces(name: str) -> tuple[tuple[_Piece, ...], ...]:
    """Per channel, the pieces of the map in knot order (consecutive equal-valued flat segments
    merged). The last knot is a flat piece of its own: np.interp returns ``fp[-1]`` there, which
    the last ramp's formula need not round to."""
    try:
        knots = np.asarray(_KNOTS[name], dtype=np.float64)
    except KeyError:
        raise ProtocolError(
            f"field 'render.colormap' must be one of {', '.join(COLORMAP_NAMES)}, got {name!r}"
        ) from None
    xp = knots[:, 0]
    return tuple(_pieces(xp, knots[:, channel]) for channel in (1, 2, 3))


def _pieces(xp: np.ndarray, fp: np.ndarray) -> tuple[_Piece, ...]:
    pieces: list[_Piece] = []
    for j in range(len(xp)):
        if j + 1 < len(xp) and fp[j + 1] != fp[j]:
            slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])  # np.interp's slope
            pieces.append(_Piece(float(xp[j]), float(fp[j]), float(slope)))
        elif not pieces or pieces[-1].slope is not None or pieces[-1].value != fp[j]:
            # Flat: np.interp's 0 * (x - xp[j]) + fp[j] is exactly fp[j].
            pieces.append(_Piece(float(xp[j]), float(fp[j])))
    return tuple(pieces)


def colormap_planes(values: np.ndarray, name: str) -> np.ndarray:
    """Map ``values`` (any shape, clipped to [0, 1]) to float32 RGB planes ``(3,) + shape``.

    Bit for bit what ``np.interp`` gives per channel (see :func:`apply_colormap`), without its
    per-pixel search: each piece of a channel is evaluated on whole chunks with np.interp's
    float64 arithmetic and kept where the value reaches the piece's start. The knots span
    exactly [0, 1] (a test checks it), so clipped values never fall outside them.
    """
    pieces = _channel_pieces(name)
    flat = np.clip(np.asarray(values, dtype=np.float32).reshape(-1), 0.0, 1.0)
    planes = np.empty((3, flat.size), dtype=np.float32)
    for start in range(0, flat.size, _CHUNK):
        x = flat[start : start + _CHUNK].astype(np.float64)  # np.interp computes in float64
        for channel, channel_pieces in enumerate(pieces):
            planes[channel, start : start + _CHUNK] = _evaluate(x, channel_pieces)
    nan = np.isnan(flat)
    if nan.any():  # np.interp returns a NaN input as it is (through float64, as here)
        planes[:, nan] = flat[nan].astype(np.float64)
    return planes.reshape(3, *np.shape(values))


def _evaluate(x: np.ndarray, pieces: tuple[_Piece, ...]) -> np.ndarray:
    """One channel on float64 ``x``: each later piece overwrites where ``x >= its start``, so
    every value ends with the formula of the segment np.interp would find for it."""
    first = pieces[0]
    colour = np.full(x.shape, first.value) if first.slope is None else _ramp(x, first)
    for piece in pieces[1:]:
        value = piece.value if piece.slope is None else _ramp(x, piece)
        np.copyto(colour, value, where=x >= piece.start)
    return colour


def _ramp(x: np.ndarray, piece: _Piece) -> np.ndarray:
    colour = x - piece.start
    colour *= piece.slope
    colour += piece.value
    return colour


def apply_colormap(values: np.ndarray, name: str) -> np.ndarray:
    """Map ``values`` (any shape, clipped to [0, 1]) to float32 RGB, shape ``values.shape + (3,)``.

    Each channel is ``np.interp`` of the clipped value on the map's knots, cast to float32
    (:func:`colormap_planes` computes exactly that, channel-planar).
    Raises :class:`ProtocolError` naming ``render.colormap`` for an unknown map name.
    """
    return np.moveaxis(colormap_planes(values, name), 0, -1).copy()
