"""Fast lossless PNG encoding of 8-bit RGB images (the dataset's references and contact sheets).

A PNG is a signature, an IHDR chunk, the zlib-compressed filtered scanlines (IDAT) and IEND;
the container is a few lines, the time is all in the deflate step. OpenCV and Pillow both use
the system zlib; ISA-L (``isal``, Intel's deflate with SIMD) does the same job several times
faster for files a few percent larger (figures and the command that measures them:
``docs/render-and-distortions.md``). Without ``isal`` installed the standard library's zlib is
used: the pixels are the same either way, only the compressed bytes differ.
"""

from __future__ import annotations

import struct
import zlib
from typing import Literal

import numpy as np

try:
    from isal import isal_zlib as _deflate

    DEFLATE_LEVEL = 2
    """ISA-L level 2: the fastest and smallest of its levels 0-2 on these images."""
except ImportError:  # pragma: no cover - isal is a declared dependency
    _deflate = zlib  # type: ignore[assignment]
    DEFLATE_LEVEL = 1

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RowFilter = Literal["none", "sub"]
_FILTER_TYPE = {"none": 0, "sub": 1}


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(payload, zlib.crc32(kind)))
    )


def filtered_scanlines(rgb: np.ndarray, row_filter: RowFilter = "none") -> np.ndarray:
    """(rows, 1 + 3 * cols) uint8: each row's PNG filter-type byte, then its filtered bytes.

    ``"sub"`` stores each byte minus the same channel of the pixel to its left (mod 256), which
    compresses smooth renders better; ``"none"`` stores the bytes as they are.
    """
    rows = rgb.shape[0]
    flat = rgb.reshape(rows, -1)
    lines = np.empty((rows, flat.shape[1] + 1), np.uint8)
    lines[:, 0] = _FILTER_TYPE[row_filter]
    if row_filter == "none":
        lines[:, 1:] = flat
    else:
        lines[:, 1:4] = flat[:, :3]
        np.subtract(flat[:, 3:], flat[:, :-3], out=lines[:, 4:])  # uint8 arithmetic wraps
    return lines


def encode_png_rgb(rgb: np.ndarray, row_filter: RowFilter = "none") -> bytes:
    """A PNG file (8-bit truecolour, no interlace) of a (rows, cols, 3) uint8 RGB array."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(
            f"expected a non-empty (rows, cols, 3) uint8 image, got {rgb.shape} {rgb.dtype}"
        )
    if row_filter not in _FILTER_TYPE:
        raise ValueError(f"row_filter must be one of {', '.join(_FILTER_TYPE)}, got {row_filter!r}")
    rows, cols = rgb.shape[:2]
    header = struct.pack(">IIBBBBB", cols, rows, 8, 2, 0, 0, 0)
    data = _deflate.compress(filtered_scanlines(rgb, row_filter).tobytes(), DEFLATE_LEVEL)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
