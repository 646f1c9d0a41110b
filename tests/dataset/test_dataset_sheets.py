from __future__ import annotations

import io

import numpy as np
from PIL import Image

from petctiqa.dataset.sheets import (
    GAP_PX,
    LABEL_PX,
    TILE_PX,
    TITLE_PX,
    SheetTile,
    contact_sheet_png,
)


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (512, 512), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_sheet_is_a_labelled_3x9_grid_in_level_order():
    tiles = []
    for p in range(3):
        for g in range(3):
            for j in range(3):
                colour = (80 * p + 10, 80 * g + 10, 80 * j + 10)
                tiles.append(SheetTile(p, g, j, (100, 70, 40)[j], _png(colour)))
    assert tiles[5].label == "P0 G1 Q40"
    sheet = np.asarray(Image.open(io.BytesIO(contact_sheet_png("P1_s1", tiles))))
    assert sheet.shape == (
        TITLE_PX + 3 * (TILE_PX + LABEL_PX + GAP_PX) + GAP_PX,
        9 * TILE_PX + 10 * GAP_PX,
        3,
    )
    for tile in tiles:
        row, column = tile.cell
        x = GAP_PX + column * (TILE_PX + GAP_PX) + TILE_PX // 2
        y = TITLE_PX + row * (TILE_PX + LABEL_PX + GAP_PX) + TILE_PX // 2
        expected = (
            80 * tile.poisson_level + 10,
            80 * tile.gaussian_level + 10,
            80 * tile.jpeg_level + 10,
        )
        assert tuple(sheet[y, x]) == expected
    # the label strip under the first tile holds light text pixels
    strip = sheet[TITLE_PX + TILE_PX : TITLE_PX + TILE_PX + LABEL_PX, GAP_PX : GAP_PX + TILE_PX]
    assert (strip.max(axis=2) > 150).sum() > 20


def test_stacked_thumbnails_equal_one_by_one_resizes():
    import cv2

    from petctiqa.dataset.sheets import thumbnails_bgr

    rng = np.random.default_rng(7)
    encoded = []
    for quality in (95, 60, 20):
        pixels = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
        ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        encoded.append(jpeg.tobytes())
    tile = 100  # not a DCT scale of 512: quarter-scale (128 px) decode, then an area resize
    stacked = thumbnails_bgr(encoded, tile)
    for data, thumb in zip(encoded, stacked, strict=True):
        quarter = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_4)
        alone = cv2.resize(quarter, (tile, tile), interpolation=cv2.INTER_AREA)
        assert thumb.shape == (tile, tile, 3)
        assert np.array_equal(thumb, alone)
    # the default 128-pixel tile of a 512x512 JPEG is libjpeg's quarter-scale decode, unresized
    for data, thumb in zip(encoded, thumbnails_bgr(encoded, TILE_PX), strict=True):
        quarter = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_4)
        assert TILE_PX == 128 and np.array_equal(thumb, quarter)


def test_jpeg_size_reads_the_frame_header():
    import cv2

    from petctiqa.dataset.sheets import jpeg_size

    ok, jpeg = cv2.imencode(".jpg", np.zeros((300, 420, 3), np.uint8))
    assert ok
    assert jpeg_size(jpeg.tobytes()) == (300, 420)
    assert jpeg_size(_png((1, 2, 3))) is None
    assert jpeg_size(b"\xff\xd8\xff") is None
