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


def thumbnail_rgb(encoded: bytes, tile: int) -> np.ndarray:
    """A (tile, tile, 3) uint8 RGB thumbnail of an encoded JPEG or PNG (area-averaged).

    JPEGs are decoded at half scale by the decoder itself (DCT scaling) when ``tile`` allows it,
    which is several times faster than a full decode.
    """
    buffer = np.frombuffer(encoded, np.uint8)
    flag = cv2.IMREAD_COLOR
    if encoded[:3] == b"\xff\xd8\xff" and tile <= 256:
        flag = cv2.IMREAD_REDUCED_COLOR_2
    bgr = cv2.imdecode(buffer, flag)
    if bgr is None:
        raise ValueError("cannot decode image for the contact sheet")
    small = cv2.resize(bgr, (tile, tile), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def contact_sheet_png(title: str, tiles: Sequence[SheetTile], tile: int = TILE_PX) -> bytes:
    """A PNG contact sheet of ``tiles`` (27 for a full slice) under a one-line ``title``."""
    font = ImageFont.load_default(size=12)
    width = GRID_COLUMNS * tile + (GRID_COLUMNS + 1) * GAP_PX
    height = TITLE_PX + GRID_ROWS * (tile + LABEL_PX + GAP_PX) + GAP_PX
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((GAP_PX, 4), title, fill=TEXT, font=font)
    for item in tiles:
        row, column = item.cell
        x = GAP_PX + column * (tile + GAP_PX)
        y = TITLE_PX + row * (tile + LABEL_PX + GAP_PX)
        sheet.paste(Image.fromarray(thumbnail_rgb(item.encoded, tile)), (x, y))
        draw.text((x + 2, y + tile + 1), item.label, fill=TEXT, font=font)
    rgb = np.asarray(sheet)
    ok, png = cv2.imencode(
        ".png",
        cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE],
    )
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding of the contact sheet failed")
    return png.tobytes()
