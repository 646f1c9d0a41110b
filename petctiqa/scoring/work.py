"""What worker processes do: turn one unit into network-input stacks (decode or render).

Runs in worker processes (see :func:`petctiqa.pool.process_pool`), so everything here is
picklable; what decoding and rendering need is imported at module level, so a fork
server that preloads this module hands it to every worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from petctiqa.errors import PetctiqaError
from petctiqa.iqa.preprocess import grid_crops, load_input, rgb_to_array
from petctiqa.iqa.score import render_pair_slices
from petctiqa.scoring.walk import Unit


@dataclass
class Decoded:
    """The network inputs of one unit, or why it could not be read."""

    unit: Unit
    items: list[tuple[str, str, np.ndarray]] = field(default_factory=list)
    """(row key, source label, (k, 3, S, S) float32 stack) per image or slice, in order."""
    error: str = ""


def decode_unit(unit: Unit, slice_stride: int, render_settings, preprocessing) -> Decoded:
    """Decode an image or render a study's slices; failures become ``error`` (never raise)."""
    try:
        if unit.kind == "missing":
            return Decoded(unit, error=unit.reason)
        if unit.kind == "image":
            return Decoded(unit, [(unit.key, unit.label, _image_stack(unit, preprocessing))])
        return Decoded(
            unit, list(_study_stacks(unit, slice_stride, render_settings, preprocessing))
        )
    except (PetctiqaError, OSError, ValueError, RuntimeError) as exc:
        return Decoded(
            unit, error=f"{unit.label}: {exc}" if unit.label not in str(exc) else str(exc)
        )


def _image_stack(unit: Unit, preprocessing) -> np.ndarray:
    return grid_crops(load_input(unit.path, preprocessing=preprocessing), preprocessing)


def _study_stacks(unit: Unit, slice_stride: int, settings, preprocessing):
    pair = unit.pair
    for k, rgb in render_pair_slices(pair, slice_stride, settings):
        array = rgb_to_array(rgb, preprocessing=preprocessing)
        key = f"slice:{pair.ct.series_uid}/{k}"
        yield key, f"{unit.label}/slice{k}", grid_crops(array, preprocessing)
