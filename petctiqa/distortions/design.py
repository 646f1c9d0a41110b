"""The images of one slice under a ``[[distortions.axes]]`` protocol: one :class:`ImageCell` each.

Two designs:

- **grid** (every axis gives ``levels``): every combination of levels, ordered by the first
  axis's level, then the second's, ... (the classic order). The code names each axis's level,
  e.g. ``m0p1c2j0``; the cells are the same for every slice.
- **continuous** (``images_per_slice = N``, axes give ``range = [low, high]``): image ``i`` of a
  slice is ``n<i>`` (zero-padded) and draws each ranged axis's value uniformly from its range
  with ``rng_for(seed, "<slice_id>_n<i>/parameters")`` (an integer parameter, e.g. a JPEG
  quality, draws a whole number in ``[low, high]``); single-level axes keep their value. The
  draws are continuous, so no two images share a cell.

A cell's volume-domain axes (PET activity, CT HU) are applied before the render
(:func:`petctiqa.distortions.pipeline.render_volume_cells`); its ``volume_key`` names that
render, and is empty when every volume axis is at its neutral value (the reference render).
The fused-image and file axes are applied by :meth:`ImageCell.encode`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from petctiqa.distortions.jpeg import decode_image
from petctiqa.distortions.registry import get_distortion
from petctiqa.errors import PetctiqaError
from petctiqa.png import encode_png_rgb
from petctiqa.protocol_axes import AxisSettings
from petctiqa.seeding import rng_for

VOLUME_DOMAINS = ("pet_activity", "ct_hu")
SHEET_COLUMNS = 9
"""Contact-sheet columns of a continuous design (its images in index order, row by row)."""


@dataclass(frozen=True)
class ImageCell:
    """One image of a slice: each axis's level (None when drawn) and parameter value."""

    code: str
    axes: tuple[AxisSettings, ...]
    levels: tuple[int | None, ...]
    values: tuple[float, ...]
    sheet_cell: tuple[int, int]
    """(row, column) of the image on the slice's contact sheet."""

    @property
    def volume_key(self) -> str:
        """Name of the render this image starts from ("" = the slice's reference render)."""
        if all(
            value == get_distortion(axis.distortion).parameter.neutral
            for axis, value in self._volume_steps()
        ):
            return ""
        if all(level is not None for level in self.levels):
            return "".join(
                f"{a.code}{lv}"
                for a, lv in zip(self.axes, self.levels, strict=True)
                if _in_volume(a)
            )
        return self.code

    def volume_steps(self, domain: str) -> list[tuple[str, AxisSettings, float]]:
        """The steps of one volume domain in protocol order, each with the key of the state
        after it (a cache key and the suffix of its generator's key): the same key means the
        same input and value, so a grid computes it once per slice."""
        grid = all(level is not None for level in self.levels)
        steps, prefix = [], ""
        for axis, value, level in zip(self.axes, self.values, self.levels, strict=True):
            if get_distortion(axis.distortion).domain != domain:
                continue
            prefix += f"{axis.code}{level}" if grid else axis.code
            steps.append((prefix if grid else f"{self.code}:{prefix}", axis, value))
        return steps

    @property
    def label(self) -> str:
        """Tile label: each axis's value where the design varies it (e.g. ``p0.25 c0.1``)."""
        parts = [
            f"{axis.code}{value:.3g}" for axis, value in self._all_steps() if len(axis.levels) != 1
        ]
        return " ".join(parts)

    def encode(
        self, image: np.ndarray, rng: np.random.Generator, image_format: str, subsampling: str
    ) -> bytes:
        """The image file: the fused-image axes then the file axis, in protocol order.
        (``subsampling`` is the file axis's own option here; the argument is for the classic
        :class:`petctiqa.distort.DistortionSpec` interface.)"""
        out = image
        for axis, value in self._all_steps():
            plugin = get_distortion(axis.distortion)
            if plugin.domain in VOLUME_DOMAINS:
                continue
            out = plugin.with_options(dict(axis.options))(out, value, rng)
        if not isinstance(out, bytes):
            raise PetctiqaError(f"image {self.code}: the last axis did not make a file")
        if image_format == "png":
            return encode_png_rgb(decode_image(out), "sub")
        return out

    def _all_steps(self) -> list[tuple[AxisSettings, float]]:
        return list(zip(self.axes, self.values, strict=True))

    def _volume_steps(self) -> list[tuple[AxisSettings, float]]:
        return [(a, v) for a, v in self._all_steps() if _in_volume(a)]


def _in_volume(axis: AxisSettings) -> bool:
    return get_distortion(axis.distortion).domain in VOLUME_DOMAINS


def has_volume_axes(axes: tuple[AxisSettings, ...]) -> bool:
    return any(_in_volume(a) for a in axes)


def grid_cells(axes: tuple[AxisSettings, ...]) -> tuple[ImageCell, ...]:
    """Every combination of levels (see the module docstring)."""
    counts = [len(a.levels) for a in axes]
    cells = []
    for levels in itertools.product(*(range(n) for n in counts)):
        column = 0
        for level, count in zip(levels[1:], counts[1:], strict=True):
            column = column * count + level
        cells.append(
            ImageCell(
                code="".join(f"{a.code}{lv}" for a, lv in zip(axes, levels, strict=True)),
                axes=axes,
                levels=tuple(levels),
                values=tuple(a.levels[lv] for a, lv in zip(axes, levels, strict=True)),
                sheet_cell=(levels[0], column),
            )
        )
    return tuple(cells)


def drawn_values(
    axes: tuple[AxisSettings, ...], seed: int, key: str
) -> tuple[tuple[int | None, ...], tuple[float, ...]]:
    """(levels, values) of one continuous-design image, drawn from ``rng_for(seed, key)``."""
    rng = rng_for(seed, key)
    levels: list[int | None] = []
    values: list[float] = []
    for axis in axes:
        if axis.value_range is None:
            levels.append(0)
            values.append(axis.levels[0])
            continue
        low, high = axis.value_range
        if get_distortion(axis.distortion).parameter.integer:
            value = float(rng.integers(int(low), int(high), endpoint=True))
        else:
            value = float(rng.uniform(low, high))
        levels.append(None)
        values.append(value)
    return tuple(levels), tuple(values)


def continuous_cells(
    axes: tuple[AxisSettings, ...], images: int, seed: int, slice_id: str
) -> tuple[ImageCell, ...]:
    """The ``images`` cells of one slice of a continuous design."""
    width = len(str(images - 1))
    cells = []
    for i in range(images):
        code = f"n{i:0{width}d}"
        levels, values = drawn_values(axes, seed, f"{slice_id}_{code}/parameters")
        cells.append(ImageCell(code, axes, levels, values, (i // SHEET_COLUMNS, i % SHEET_COLUMNS)))
    return tuple(cells)
