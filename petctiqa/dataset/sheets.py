"""Contact sheets: the 27 images of one slice in a labelled 3 x 9 grid, one PNG per slice.

Row r is Poisson level r; column c is Gaussian level ``c // 3`` and JPEG level ``c % 3``, so the
reference (P0 G0 Q100) is top left and the strongest distortion bottom right. Each tile is
downscaled to ``tile`` pixels and labelled ``P<level> G<level> Q<quality>`` underneath.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

GRID_ROWS = 3
GRID_COLUMNS = 9
TILE_PX = 170
LABEL_PX = 16
TITLE_PX = 22
GAP_PX = 4
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
SHEET_PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_FILTER,
    cv2.IMWRITE_PNG_FILTER_NONE,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_RLE,
]
"""Fast lossless PNG for the sheets: no row filter, zlib level 1 with run-length matching (about
half the encode time of libpng's adaptive filtering, for ~15 % larger files)."""


@dataclass(frozen=True)
class SheetTile:
    """One grid cell: where it goes and what it says."""

    poisson_level: int
    gaussian_level: int
    jpeg_level: int
    jpeg_quality: int
    encoded: bytes
    """The image file's bytes (JPEG or PNG)."""

    @property
    def label(self) -> str:
        return f"P{self.poisson_level} G{self.gaussian_level} Q{self.jpeg_quality}"

    @property
    def cell(self) -> tuple[int, int]:
        """(row, column) in the 3 x 9 grid."""
        return self.poisson_level, 3 * self.gaussian_level + self.jpeg_level


def _decode_for_thumbnail(encoded: bytes, tile: int) -> np.ndarray:
    """BGR pixels of an encoded JPEG or PNG; JPEGs at half scale when ``tile`` allows it (the
    decoder's DCT scaling, several times faster than a full decode)."""
    flag = cv2.IMREAD_COLOR
    if encoded[:3] == b"\xff\xd8\xff" and tile <= 256:
        flag = cv2.IMREAD_REDUCED_COLOR_2
    bgr = cv2.imdecode(np.frombuffer(encoded, np.uint8), flag)
    if bgr is None:
        raise ValueError("cannot decode image for the contact sheet")
    return bgr


def thumbnails_bgr(encoded: Sequence[bytes], tile: int) -> list[np.ndarray]:
    """(tile, tile, 3) uint8 BGR thumbnails of encoded JPEGs/PNGs (area-averaged).

    Same-sized images are stacked and resized in one call: with the stack's height an exact
    multiple of ``tile`` per image, the area average never mixes two images, so the result is
    identical to resizing each one alone (and faster).
    """
    decoded = [_decode_for_thumbnail(data, tile) for data in encoded]
    if decoded and len({image.shape for image in decoded}) == 1:
        stacked = cv2.resize(
            np.concatenate(decoded, axis=0),
            (tile, tile * len(decoded)),
            interpolation=cv2.INTER_AREA,
        )
        return [stacked[i * tile : (i + 1) * tile] for i in range(len(decoded))]
    return [cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA) for image in decoded]


def thumbnail_rgb(encoded: bytes, tile: int) -> np.ndarray:
    """A (tile, tile, 3) uint8 RGB thumbnail of an encoded JPEG or PNG (area-averaged)."""
    return cv2.cvtColor(thumbnails_bgr([encoded], tile)[0], cv2.COLOR_BGR2RGB)


def contact_sheet_png(title: str, tiles: Sequence[SheetTile], tile: int = TILE_PX) -> bytes:
    """A PNG contact sheet of ``tiles`` (27 for a full slice) under a one-line ``title``.

    The sheet is assembled in OpenCV's BGR channel order (the colours are given reversed to
    PIL's text drawing), so it goes to the PNG encoder without a colour conversion.
    """
    font = ImageFont.load_default(size=12)
    width = GRID_COLUMNS * tile + (GRID_COLUMNS + 1) * GAP_PX
    height = TITLE_PX + GRID_ROWS * (tile + LABEL_PX + GAP_PX) + GAP_PX
    bgr = np.empty((height, width, 3), np.uint8)
    bgr[:] = BACKGROUND[::-1]
    for item, thumb in zip(tiles, thumbnails_bgr([t.encoded for t in tiles], tile), strict=True):
        row, column = item.cell
        x = GAP_PX + column * (tile + GAP_PX)
        y = TITLE_PX + row * (tile + LABEL_PX + GAP_PX)
        bgr[y : y + tile, x : x + tile] = thumb
    sheet = Image.fromarray(bgr)  # channels in BGR order; only text is drawn on it
    draw = ImageDraw.Draw(sheet)
    text = TEXT[::-1]
    draw.text((GAP_PX, 4), title, fill=text, font=font)
    for item in tiles:
        row, column = item.cell
        x = GAP_PX + column * (tile + GAP_PX)
        y = TITLE_PX + row * (tile + LABEL_PX + GAP_PX)
        draw.text((x + 2, y + tile + 1), item.label, fill=text, font=font)
    ok, png = cv2.imencode(".png", np.asarray(sheet), SHEET_PNG_PARAMS)
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding of the contact sheet failed")
    return png.tobytes()
