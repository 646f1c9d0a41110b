"""Contact sheets: the images of one slice in a labelled grid, one PNG per slice.

Each tile says its (row, column); the grid is as large as its tiles need. The classic grid
(:class:`SheetTile`) is 3 x 9: row r is Poisson level r; column c is Gaussian level ``c // 3``
and JPEG level ``c % 3``, so the reference (P0 G0 Q100) is top left and the strongest
distortion bottom right. Other protocols' tiles (:class:`GridTile`) place themselves (see
:mod:`petctiqa.distortions.design`: first axis down, the others across; a continuous design
in rows of 9). Each tile is the
image file itself, decoded and downscaled to ``tile`` pixels (128: a 512x512 JPEG is decoded
straight at quarter scale by libjpeg's DCT scaling, the cheapest faithful thumbnail), and
labelled ``P<level> G<level> Q<quality>`` underneath. The grid, labels and background depend
only on the tiles' levels, so that part is drawn once per process and reused.

At 128 px a 512-px image is shown at a quarter of its size, where impulse noise and the JPEG
levels are averaged away. So each slice also gets a crops sheet (``sheets/crops/<slice>.png``)
in the same grid: every cell holds the same ``CROP_PX`` x ``CROP_PX`` region of its image at
1:1 (every pixel as stored, nothing resampled), taken from the image centre, which on a thorax
slice holds the mediastinum's edges that show ringing and blocking.
"""

from __future__ import annotations

import functools
import hashlib
import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from petctiqa.dataset.folder import CROPS_DIR
from petctiqa.png import encode_png_rgb

TILE_PX = 128
LABEL_PX = 16
TITLE_PX = 22
GAP_PX = 4
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
CROP_PX = 128
_MCU_PX = 16
"""The tallest JPEG MCU (4:2:0)."""
"""Sub-folder of ``sheets/`` holding the 1:1 crops sheets (kept apart: ``sheets/*.png`` are the
contact sheets, one per slice)."""


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


@dataclass(frozen=True)
class GridTile:
    """A grid cell of any protocol: its place, its label and the image file's bytes."""

    cell: tuple[int, int]
    label: str
    encoded: bytes


def _grid_shape(cells: tuple[tuple[tuple[int, int], str], ...]) -> tuple[int, int]:
    """(rows, columns) that hold every cell (3 x 9 for the classic 27)."""
    return max(c[0][0] for c in cells) + 1, max(c[0][1] for c in cells) + 1


def _start_of_frame(encoded: bytes) -> tuple[int, int] | None:
    """(offset, marker byte) of a JPEG's start-of-frame segment, or None if there is none."""
    if encoded[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 9 <= len(encoded):
        if encoded[at] != 0xFF:
            return None
        marker = encoded[at + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", encoded[at + 2 : at + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            return at, marker
        at += 2 + length
    return None


def jpeg_size(encoded: bytes) -> tuple[int, int] | None:
    """(rows, cols) from a JPEG's start-of-frame marker, or None if it is not a readable JPEG."""
    found = _start_of_frame(encoded)
    if found is None:
        return None
    at = found[0]
    rows, cols = struct.unpack(">HH", encoded[at + 5 : at + 9])
    return rows, cols


_REDUCED_FLAGS = (
    (8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
)


def _decode_for_thumbnail(encoded: bytes, tile: int) -> np.ndarray:
    """BGR pixels of an encoded JPEG or PNG. A JPEG is decoded at the smallest DCT scale (1/8,
    1/4 or 1/2) that still covers ``tile`` pixels: several times faster than a full decode."""
    flag = cv2.IMREAD_COLOR
    size = jpeg_size(encoded)
    if size is not None:
        for factor, reduced in _REDUCED_FLAGS:
            if min(size) // factor >= tile:
                flag = reduced
                break
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
    if all(image.shape[:2] == (tile, tile) for image in decoded):
        return decoded
    if decoded and len({image.shape for image in decoded}) == 1:
        stacked = cv2.resize(
            np.concatenate(decoded, axis=0),
            (tile, tile * len(decoded)),
            interpolation=cv2.INTER_AREA,
        )
        return [stacked[i * tile : (i + 1) * tile] for i in range(len(decoded))]
    return [cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA) for image in decoded]


def _tile_origin(cell: tuple[int, int], tile: int) -> tuple[int, int]:
    """(x, y) of a grid cell's top-left pixel."""
    row, column = cell
    return GAP_PX + column * (tile + GAP_PX), TITLE_PX + row * (tile + LABEL_PX + GAP_PX)


@functools.lru_cache(maxsize=8)
def _labelled_grid_bgr(cells: tuple[tuple[tuple[int, int], str], ...], tile: int) -> np.ndarray:
    """The sheet without title and thumbnails: background and the label under every cell."""
    rows, columns = _grid_shape(cells)
    width = columns * tile + (columns + 1) * GAP_PX
    height = TITLE_PX + rows * (tile + LABEL_PX + GAP_PX) + GAP_PX
    sheet = Image.new("RGB", (width, height), BACKGROUND[::-1])  # BGR order, see below
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for cell, label in cells:
        x, y = _tile_origin(cell, tile)
        draw.text((x + 2, y + tile + 1), label, fill=TEXT[::-1], font=font)
    grid = np.asarray(sheet).copy()
    grid.flags.writeable = False
    return grid


def _title_strip_bgr(title: str, width: int) -> np.ndarray:
    strip = Image.new("RGB", (width, TITLE_PX), BACKGROUND[::-1])
    ImageDraw.Draw(strip).text(
        (GAP_PX, 4), title, fill=TEXT[::-1], font=ImageFont.load_default(size=12)
    )
    return np.asarray(strip)


def contact_sheet_png(
    title: str, tiles: Sequence[SheetTile | GridTile], tile: int = TILE_PX
) -> bytes:
    """A PNG contact sheet of ``tiles`` (27 for a full slice) under a one-line ``title``.

    The sheet is assembled in OpenCV's BGR channel order, the order the thumbnails are decoded
    in (the colours are given reversed to PIL's text drawing), and converted to RGB once.
    """
    grid = _labelled_grid_bgr(tuple((item.cell, item.label) for item in tiles), tile)
    bgr = grid.copy()
    bgr[:TITLE_PX] = _title_strip_bgr(title, bgr.shape[1])
    for item, thumb in zip(tiles, thumbnails_bgr([t.encoded for t in tiles], tile), strict=True):
        x, y = _tile_origin(item.cell, tile)
        bgr[y : y + tile, x : x + tile] = thumb
    return encode_png_rgb(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def crop_origin(width: int, height: int, crop: int = CROP_PX) -> tuple[int, int]:
    """(x, y) of the fixed crop region: centred, clipped to images smaller than ``crop``."""
    return max((width - crop) // 2, 0), max((height - crop) // 2, 0)


def _top_rows_only(encoded: bytes, rows: int) -> bytes:
    """A sequential (baseline) JPEG whose frame header says ``rows`` rows, when it has more: the
    decoder then stops after them, and the pixels of those rows are the full decode's (IDCT
    blocks are independent; the chroma upsampling reads one chroma row past a row, so callers
    ask for a whole MCU row beyond what they use). Anything else is returned unchanged."""
    found = _start_of_frame(encoded)
    if found is None or found[1] not in (0xC0, 0xC1):  # progressive, lossless, arithmetic
        return encoded
    at = found[0]
    (height,) = struct.unpack(">H", encoded[at + 5 : at + 7])
    if rows >= height:
        return encoded
    return encoded[: at + 5] + struct.pack(">H", rows) + encoded[at + 7 :]


def _crop_bgr(data: bytes, crop: int) -> np.ndarray:
    """The crop region of one encoded image, BGR, at most (crop, crop). A JPEG is decoded only
    down to one MCU row below the region (:func:`_top_rows_only`, a third less work at 512 px)
    and by PIL, whose libjpeg error manager stays silent about the entropy data left unread
    (OpenCV's prints "Corrupt JPEG data" for every image); the region is the full decode's."""
    size = jpeg_size(data)
    try:
        if size is None:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if pixels is None:
                raise ValueError("cannot decode image for the crops sheet")
            x, y = crop_origin(pixels.shape[1], pixels.shape[0], crop)
            return pixels[y : y + crop, x : x + crop]
        height, width = size
        x, y = crop_origin(width, height, crop)
        rows = -(-(y + crop + _MCU_PX) // _MCU_PX) * _MCU_PX
        with Image.open(io.BytesIO(_top_rows_only(data, rows))) as image:
            rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except OSError as exc:
        raise ValueError(f"cannot decode image for the crops sheet ({exc})") from None
    return rgb[y : y + crop, x : x + crop, ::-1]


def crops_bgr(encoded: Sequence[bytes], crop: int = CROP_PX) -> list[np.ndarray]:
    """(crop, crop, 3) uint8 BGR 1:1 crops of encoded JPEGs/PNGs at :func:`crop_origin`
    (decoded at full scale: a reduced-scale decode would resample); a smaller image fills the
    top-left corner of its tile, the rest is background."""
    out = []
    for data in encoded:
        part = _crop_bgr(data, crop)
        tile = np.empty((crop, crop, 3), np.uint8)
        tile[:] = BACKGROUND[::-1]
        tile[: part.shape[0], : part.shape[1]] = part
        out.append(tile)
    return out


def crops_sheet_png(
    title: str, tiles: Sequence[SheetTile | GridTile], size: tuple[int, int], crop: int = CROP_PX
) -> bytes:
    """A PNG of ``tiles``' 1:1 crops in the contact sheet's grid; ``size`` is the images'
    (width, height), used to state the crop region in the title."""
    x, y = crop_origin(*size, crop)
    region = f"1:1 crop x {x}-{x + min(crop, size[0]) - 1}, y {y}-{y + min(crop, size[1]) - 1}"
    grid = _labelled_grid_bgr(tuple((item.cell, item.label) for item in tiles), crop)
    bgr = grid.copy()
    bgr[:TITLE_PX] = _title_strip_bgr(f"{title}   {region}", bgr.shape[1])
    for item, part in zip(tiles, crops_bgr([t.encoded for t in tiles], crop), strict=True):
        left, top = _tile_origin(item.cell, crop)
        bgr[top : top + crop, left : left + crop] = part
    return encode_png_rgb(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def slice_sheet_paths(sheets_dir: Path, slice_id: str) -> tuple[Path, Path]:
    """(contact sheet, crops sheet) of one slice."""
    return sheets_dir / f"{slice_id}.png", sheets_dir / CROPS_DIR / f"{slice_id}.png"


def slice_sheets_png(
    title: str, tiles: Sequence[SheetTile | GridTile], size: tuple[int, int]
) -> tuple[bytes, bytes]:
    """(contact sheet, crops sheet) PNGs of one slice's tiles (images of ``size``)."""
    return contact_sheet_png(title, tiles), crops_sheet_png(title, tiles, size)


def sheets_digest(sheets: Sequence[bytes | None]) -> str | None:
    """One sha256 over a slice's sheets (None when one is missing): the build records it to
    verify both files on a rerun."""
    if any(data is None for data in sheets):
        return None
    joined = "".join(hashlib.sha256(data).hexdigest() for data in sheets)  # type: ignore[arg-type]
    return hashlib.sha256(joined.encode()).hexdigest()


def read_sheets_digest(paths: Sequence[Path]) -> str | None:
    """:func:`sheets_digest` of the files on disk (None when one is missing)."""
    return sheets_digest([path.read_bytes() if path.is_file() else None for path in paths])
