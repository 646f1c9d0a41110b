"""How an image file becomes network input: reading, resize or native-resolution crops.

Two modes (:class:`Preprocessing`, stored in every checkpoint so ``score`` reproduces training):

- ``"resize"`` (the MS-IQA reference code's): RGB, bicubic resize to ``size`` x ``size``, [0, 1],
  ``(x - mean) / std``. One input per image.
- ``"crops"``: no resampling at all. Training takes one ``size`` x ``size`` crop per image and
  epoch at a random position on the 16-pixel grid (so JPEG's 8x8 blocks and 4:2:0 chroma
  macroblocks stay where the encoder put them); evaluation and scoring take a fixed
  ``grid`` x ``grid`` set of crops that covers the whole image and average the model's outputs.
  Resizing a 512-px PET/CT image to 224 px erases most of the impulse, grain and blocking signal
  that radiologists rated, which is why this mode exists.

Float TIFF slices are read as one channel, clipped to [0, 1] when their values lie within
[-0.05, 1.05] (the LDCTIQAC2023 convention) or min-max scaled per image otherwise, and repeated
to three channels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from petctiqa.errors import DatasetError

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
MODES = ("resize", "crops")
CROP_ALIGN = 16
"""Crop origins are multiples of this: the JPEG 4:2:0 macroblock (16 x 16 luma pixels)."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes network input (stored in every checkpoint).

    ``size`` is the resize target (``mode="resize"``) or the crop side (``mode="crops"``);
    ``grid`` is the number of crops per side at evaluation (``grid`` x ``grid`` crops, evenly
    spread and 16-aligned, covering the image); ``grid=0`` evaluates the whole image in one pass
    (for fully convolutional models). The defaults are the reference code's.
    """

    size: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    mode: str = "resize"
    grid: int = 1

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise DatasetError(
                f"preprocessing: interpolation {self.interpolation!r} is not one of "
                f"{', '.join(INTERPOLATIONS)}"
            )
        if self.mode not in MODES:
            raise DatasetError(
                f"preprocessing: mode {self.mode!r} is not one of {', '.join(MODES)}"
            )
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if len(mean) != 3 or len(std) != 3 or not all(v > 0 for v in std):
            raise DatasetError(
                f"preprocessing: mean/std must be 3 values each, std > 0 (got {mean}, {std})"
            )
        if int(self.size) != self.size or self.size < 1:
            raise DatasetError(f"preprocessing: size must be a positive integer, got {self.size}")
        if int(self.grid) != self.grid or self.grid < 0:
            raise DatasetError(f"preprocessing: grid must be an integer >= 0, got {self.grid}")
        if self.mode == "crops" and self.size % CROP_ALIGN:
            raise DatasetError(
                f"preprocessing: crop size must be a multiple of {CROP_ALIGN}, got {self.size}"
            )
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "grid", int(self.grid))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values; the resize defaults (mode, grid) are left out, so
        MS-IQA checkpoints store exactly what they stored before crops existed."""
        data: dict[str, Any] = {
            "size": self.size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }
        if self.mode != "resize" or self.grid != 1:
            data.update(mode=self.mode, grid=self.grid)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; dicts written before ``mode`` existed mean ``resize``."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise DatasetError(f"preprocessing: unknown keys {sorted(unknown)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    @property
    def crops_per_image(self) -> int:
        """Network inputs per image at evaluation."""
        return self.grid * self.grid if self.mode == "crops" and self.grid else 1


# ---------------------------------------------------------------------------- image reading


def read_image(path: Path) -> Image.Image:
    """Open an image as PIL ``RGB`` (8-bit) or ``F`` (float, one-channel TIFF slices).

    Raises DatasetError naming the file when it cannot be decoded.
    """
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        if Path(path).suffix.lower() in (".tif", ".tiff"):
            return _read_tiff_float(path)
        raise DatasetError(f"{path}: cannot read image ({exc})") from None
    if image.mode in ("F", "I", "I;16", "I;16B", "I;16L"):
        return _float_image(np.asarray(image, dtype=np.float32), path)
    return image.convert("RGB")


def _read_tiff_float(path: Path) -> Image.Image:
    # tifffile reads the float slices PIL cannot open.
    try:
        array = np.asarray(tifffile.imread(path), dtype=np.float32)
    except Exception as exc:  # tifffile raises many types for broken files
        raise DatasetError(f"{path}: cannot read image ({exc})") from None
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3].mean(axis=-1)
    if array.ndim != 2:
        raise DatasetError(f"{path}: expected a 2-D slice, got shape {array.shape}")
    return _float_image(array, path)


def _float_image(array: np.ndarray, path: Path) -> Image.Image:
    if not np.all(np.isfinite(array)):
        raise DatasetError(f"{path}: image holds non-finite values")
    low, high = float(array.min()), float(array.max())
    if low >= -0.05 and high <= 1.05:
        unit = np.clip(array, 0.0, 1.0)
    else:
        unit = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return Image.fromarray(unit.astype(np.float32), mode="F")


# ------------------------------------------------------------------------- network inputs


def _normalised_chw(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """PIL image -> float32 (3, H, W), scaled to [0, 1] and normalised, at its own size."""
    if image.mode == "F":
        width, height = image.size
        unit = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        chw = np.broadcast_to(unit, (3, height, width))
        return _normalise_unit(chw, prep)
    array = np.asarray(image)
    if _is_rgb8(array):
        return _normalised_rgb8(array, prep)
    return _normalise_unit(array.astype(np.float32).transpose(2, 0, 1) / 255.0, prep)


def _normalise_unit(chw: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """float32 (3, H, W) in [0, 1] -> ``(x - mean) / std``, float32 and C-ordered."""
    mean = np.asarray(prep.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(prep.std, dtype=np.float32)[:, None, None]
    # C order: a transposed (HWC-strided) array would reach torch as a channels_last tensor.
    return np.ascontiguousarray((chw - mean) / std, dtype=np.float32)


def _is_rgb8(array: np.ndarray) -> bool:
    return array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3


@functools.lru_cache(maxsize=16)
def _level_tables(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """float32 (3, 256): every 8-bit level of each channel normalised with exactly the float32
    operations of :func:`_normalise_unit` on ``level / 255`` (so looking a pixel up gives the
    bits the float path computes, at a fraction of its five full-image float passes)."""
    levels = np.arange(256, dtype=np.float32)[None, :] / 255.0
    tables = (levels - np.asarray(mean, dtype=np.float32)[:, None]) / np.asarray(
        std, dtype=np.float32
    )[:, None]
    tables.setflags(write=False)  # shared by every caller through the cache
    return tables


def _normalised_rgb8(rgb: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W) normalised, by table lookup per channel."""
    tables = _level_tables(prep.mean, prep.std)
    height, width, _ = rgb.shape
    chw = np.empty((3, height, width), dtype=np.float32)
    for channel in range(3):
        # mode="clip" skips take's per-index bounds check; uint8 levels are always in range.
        np.take(tables[channel], rgb[..., channel], out=chw[channel], mode="clip")
    return chw


def image_to_array(
    image: Image.Image, size: int = 224, preprocessing: Preprocessing | None = None
) -> np.ndarray:
    """PIL image -> float32 (3, S, S) resized network input (``resize`` mode), or the whole
    normalised image at native resolution (``crops`` mode; crop it with :func:`grid_crops` or
    :func:`random_crop`)."""
    prep = preprocessing if preprocessing is not None else Preprocessing(size=size)
    if prep.mode == "resize" and image.size != (prep.size, prep.size):
        image = image.resize((prep.size, prep.size), INTERPOLATIONS[prep.interpolation])
    return _normalised_chw(image, prep)


def rgb_to_array(
    rgb: np.ndarray, size: int = 224, preprocessing: Preprocessing | None = None
) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float32 (3, H', W') as :func:`image_to_array`."""
    array = np.ascontiguousarray(rgb, dtype=np.uint8)
    prep = preprocessing if preprocessing is not None else Preprocessing(size=size)
    native = prep.mode != "resize" or array.shape[:2] == (prep.size, prep.size)
    if native and _is_rgb8(array):
        # Nothing to resample: the PIL round trip would only copy the pixels twice.
        return _normalised_rgb8(array, prep)
    return image_to_array(Image.fromarray(array, "RGB"), size, prep)


def load_input(
    path: Path, size: int = 224, preprocessing: Preprocessing | None = None
) -> np.ndarray:
    return image_to_array(read_image(path), size, preprocessing)


def crop_side(height: int, width: int, size: int) -> int:
    """The crop side used for an image: ``size``, or the largest 16-multiple that fits."""
    side = min(size, height - height % CROP_ALIGN, width - width % CROP_ALIGN)
    if side < CROP_ALIGN:
        raise DatasetError(f"image of {height} x {width} px is too small for {CROP_ALIGN}-px crops")
    return side


def grid_origins(length: int, side: int, count: int) -> list[int]:
    """``count`` 16-aligned crop origins along one axis, evenly spread from 0 to the far edge."""
    last = (length - side) // CROP_ALIGN
    steps = np.linspace(0, last, count) if count > 1 else np.zeros(1)
    return sorted({int(round(v)) * CROP_ALIGN for v in steps})


def grid_crops(array: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """(k, 3, S, S) evaluation inputs of one (3, H, W) array: one for ``resize`` and for
    ``grid=0`` (the whole image), else the ``grid`` x ``grid`` covering crops (fewer when the
    image is small)."""
    if prep.mode == "resize" or prep.grid == 0:
        return array[None]
    _, height, width = array.shape
    side = crop_side(height, width, prep.size)
    rows = grid_origins(height, side, prep.grid)
    cols = grid_origins(width, side, prep.grid)
    return np.stack([array[:, r : r + side, c : c + side] for r in rows for c in cols])


def random_crop(array: np.ndarray, prep: Preprocessing, rng: np.random.Generator) -> np.ndarray:
    """One (3, S, S) training input: the array itself for ``resize``, else a crop at a random
    16-aligned position drawn from ``rng``."""
    if prep.mode == "resize":
        return array
    _, height, width = array.shape
    side = crop_side(height, width, prep.size)
    row, col = random_origin(height, width, side, rng)
    return np.ascontiguousarray(array[:, row : row + side, col : col + side])


def random_origin(height: int, width: int, side: int, rng: np.random.Generator) -> tuple[int, int]:
    """A 16-aligned (row, col) origin for a ``side`` crop, row drawn first, then column."""
    row = int(rng.integers(0, (height - side) // CROP_ALIGN + 1)) * CROP_ALIGN
    col = int(rng.integers(0, (width - side) // CROP_ALIGN + 1)) * CROP_ALIGN
    return row, col
