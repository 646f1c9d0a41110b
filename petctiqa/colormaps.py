"""PET colour maps for fusion renders: value in [0, 1] -> RGB in [0, 1], black at zero uptake.

Every map here sends 0 to pure black, so a pixel without PET uptake keeps the pure grey of its
CT (R = G = B) after blending. Maps are piecewise linear, given by (position, R, G, B) knots.
"""

from __future__ import annotations

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


def apply_colormap(values: np.ndarray, name: str) -> np.ndarray:
    """Map ``values`` (any shape, clipped to [0, 1]) to float32 RGB, shape ``values.shape + (3,)``.

    Raises :class:`ProtocolError` naming ``render.colormap`` for an unknown map name.
    """
    try:
        knots = np.asarray(_KNOTS[name], dtype=np.float64)
    except KeyError:
        raise ProtocolError(
            f"field 'render.colormap' must be one of {', '.join(COLORMAP_NAMES)}, got {name!r}"
        ) from None
    flat = np.clip(np.asarray(values, dtype=np.float32).reshape(-1), 0.0, 1.0)
    rgb = np.empty((flat.size, 3), dtype=np.float32)
    for channel in range(3):  # three vectorised interpolations, not a pixel loop
        rgb[:, channel] = np.interp(flat, knots[:, 0], knots[:, channel + 1])
    return rgb.reshape(*np.shape(values), 3)
