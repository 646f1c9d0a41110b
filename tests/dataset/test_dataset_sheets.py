from __future__ import annotations

import io

import numpy as np
import pytest
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


def _noise_png(seed: int, size: tuple[int, int]) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _grid_tiles(size: tuple[int, int]) -> list[SheetTile]:
    return [
        SheetTile(p, g, j, (100, 70, 40)[j], _noise_png(9 * p + 3 * g + j, size))
        for p in range(3)
        for g in range(3)
        for j in range(3)
    ]


def _cell_origin(tile: SheetTile, px: int) -> tuple[int, int]:
    row, column = tile.cell
    return GAP_PX + column * (px + GAP_PX), TITLE_PX + row * (px + LABEL_PX + GAP_PX)


def test_crops_sheet_holds_every_cell_s_centre_region_pixel_for_pixel():
    from petctiqa.dataset.sheets import CROP_PX, crop_origin, crops_sheet_png

    size = (512, 384)
    tiles = _grid_tiles(size)
    assert crop_origin(*size) == (192, 128)
    sheet = np.asarray(Image.open(io.BytesIO(crops_sheet_png("P1_s1", tiles, size))))
    assert sheet.shape == (
        TITLE_PX + 3 * (CROP_PX + LABEL_PX + GAP_PX) + GAP_PX,
        9 * CROP_PX + 10 * GAP_PX,
        3,
    )
    for tile in tiles:
        image = np.asarray(Image.open(io.BytesIO(tile.encoded)))
        x, y = _cell_origin(tile, CROP_PX)
        cell = sheet[y : y + CROP_PX, x : x + CROP_PX]
        np.testing.assert_array_equal(cell, image[128 : 128 + 128, 192 : 192 + 128])
    # the title names the region, so a reader knows which pixels they are looking at
    title = sheet[:TITLE_PX]
    assert (title.max(axis=2) > 150).sum() > 50


def test_crops_of_images_smaller_than_the_crop_keep_every_pixel_on_background():
    from petctiqa.dataset.sheets import BACKGROUND, CROP_PX, crops_bgr

    small = _noise_png(1, (40, 30))
    (tile,) = crops_bgr([small])
    rgb = tile[:, :, ::-1]
    np.testing.assert_array_equal(rgb[:30, :40], np.asarray(Image.open(io.BytesIO(small))))
    assert (rgb[30:, :] == BACKGROUND).all() and (rgb[:, 40:] == BACKGROUND).all()
    assert tile.shape == (CROP_PX, CROP_PX, 3)


def test_build_writes_a_crops_sheet_per_slice_and_restores_a_damaged_one(
    small_phantom, small_protocol, tmp_path
):
    from petctiqa.dataset.build import BuildOptions, build_dataset
    from petctiqa.dataset.manifest import read_manifest
    from petctiqa.dataset.sheets import CROP_PX, crop_origin
    from petctiqa.protocol import load_dataset_protocol

    options = BuildOptions(
        out_dir=tmp_path / "ds",
        protocol=load_dataset_protocol(small_protocol),
        src=small_phantom,
        jobs=1,
        patients=1,
        slices=1,
    )
    build_dataset(options)
    records = read_manifest(tmp_path / "ds" / "manifest.csv")
    (slice_id,) = {r.slice_id for r in records}
    crops_path = tmp_path / "ds" / "sheets" / "crops" / f"{slice_id}.png"
    sheet = np.asarray(Image.open(crops_path))
    worst = next(r for r in records if r.image_id.endswith("p2g2j2"))
    image = np.asarray(Image.open(tmp_path / "ds" / worst.image).convert("RGB"))
    assert image.shape[:2] == (128, 128)  # the small protocol's size: the crop is the image
    assert crop_origin(128, 128) == (0, 0)
    x, y = GAP_PX + 8 * (CROP_PX + GAP_PX), TITLE_PX + 2 * (CROP_PX + LABEL_PX + GAP_PX)
    # OpenCV and PIL both decode with libjpeg-turbo's default (islow) IDCT
    np.testing.assert_array_equal(sheet[y : y + CROP_PX, x : x + CROP_PX], image)
    original = crops_path.read_bytes()
    crops_path.write_bytes(original[:-50])
    again = build_dataset(options)
    assert again.images_written == 0
    assert crops_path.read_bytes() == original


@pytest.mark.parametrize("subsampling", [0, 1, 2])  # PIL: 4:4:4, 4:2:2, 4:2:0
def test_crops_decode_only_the_rows_they_need_with_the_full_decode_s_pixels(subsampling):
    """The crop's JPEG is decoded only down to an MCU row below the crop: same pixels."""
    import cv2

    from petctiqa.dataset.sheets import CROP_PX, crop_origin, crops_bgr

    rng = np.random.default_rng(subsampling)
    for width, height in ((512, 512), (500, 301)):
        base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        smooth = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
        pixels = np.where(rng.random((height, width, 1)) < 0.01, 255, smooth).astype(np.uint8)
        for quality in (100, 70, 40):
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, subsampling=subsampling)
            data = buffer.getvalue()
            full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            x, y = crop_origin(width, height)
            (crop,) = crops_bgr([data])
            np.testing.assert_array_equal(crop, full[y : y + CROP_PX, x : x + CROP_PX])
