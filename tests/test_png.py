"""The PNG writer: files that PIL and OpenCV decode to exactly the input pixels."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from petctiqa import png
from petctiqa.png import encode_png_rgb, filtered_scanlines


def _decode_both(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    image = Image.open(io.BytesIO(data))
    image.load()  # PIL checks every chunk's CRC while loading
    assert image.mode == "RGB"
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return np.asarray(image), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("row_filter", ["none", "sub"])
@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 7, 3), (5, 1, 3), (37, 53, 3), (512, 512, 3)])
def test_round_trip_is_lossless(row_filter: str, shape: tuple[int, int, int]) -> None:
    rgb = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    data = encode_png_rgb(rgb, row_filter)  # type: ignore[arg-type]
    via_pil, via_cv2 = _decode_both(data)
    assert np.array_equal(via_pil, rgb)
    assert np.array_equal(via_cv2, rgb)


def test_header_and_chunks() -> None:
    rgb = np.zeros((3, 4, 3), np.uint8)
    data = encode_png_rgb(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    assert struct.unpack(">IIBBBBB", data[16:29]) == (4, 3, 8, 2, 0, 0, 0)
    assert data.endswith(b"\x00\x00\x00\x00IEND\xaeB`\x82")


def test_non_contiguous_input_and_channel_views() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    bgr_view = rgb[:, ::2, ::-1]
    via_pil, _ = _decode_both(encode_png_rgb(bgr_view, "sub"))
    assert np.array_equal(via_pil, bgr_view)


def test_sub_filter_stores_left_differences_mod_256() -> None:
    rgb = np.array([[[10, 200, 0], [5, 100, 255], [5, 100, 255]]], np.uint8)
    lines = filtered_scanlines(rgb, "sub")
    assert lines.tolist() == [[1, 10, 200, 0, 251, 156, 255, 0, 0, 0]]
    assert filtered_scanlines(rgb, "none").tolist() == [[0, *rgb.reshape(-1).tolist()]]


def test_standard_zlib_fallback_gives_the_same_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    monkeypatch.setattr(png, "_deflate", zlib)
    monkeypatch.setattr(png, "DEFLATE_LEVEL", 1)
    via_pil, _ = _decode_both(encode_png_rgb(rgb))
    assert np.array_equal(via_pil, rgb)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4), np.uint8), "(rows, cols, 3) uint8"),
        (np.zeros((4, 4, 4), np.uint8), "(rows, cols, 3) uint8"),
        (np.zeros((4, 4, 3), np.uint16), "(rows, cols, 3) uint8"),
        (np.zeros((0, 4, 3), np.uint8), "(rows, cols, 3) uint8"),
    ],
)
def test_bad_images_are_refused(image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        encode_png_rgb(image)


def test_unknown_filter_is_refused() -> None:
    with pytest.raises(ValueError, match="row_filter must be one of none, sub"):
        encode_png_rgb(np.zeros((2, 2, 3), np.uint8), "paeth")  # type: ignore[arg-type]
