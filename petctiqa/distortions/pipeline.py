"""Applying a protocol's PET/CT-domain axes to one slice and rendering the result.

This is the hook a dataset build needs for volume-domain distortions: cut the slice
(:func:`~petctiqa.distortions.slices.pet_ct_slice`), apply the ``pet_activity`` / ``ct_hu``
axes at the chosen levels in protocol order, then the unchanged fusion render. With every
axis at its neutral value the render is byte-identical to :func:`petctiqa.render.render_slice`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from petctiqa.dicom.records import Volume
from petctiqa.distortions.registry import get_distortion
from petctiqa.distortions.slices import PetAcquisition, PetCtSlice, pet_ct_slice
from petctiqa.errors import PetctiqaError
from petctiqa.protocol import RenderSettings
from petctiqa.protocol_axes import AxisSettings

SLICE_DOMAINS = ("pet_activity", "ct_hu")


def slice_axes(axes: Sequence[AxisSettings]) -> tuple[AxisSettings, ...]:
    """The axes that act before the render (PET activity and CT HU)."""
    return tuple(a for a in axes if get_distortion(a.distortion).domain in SLICE_DOMAINS)


def apply_slice_distortions(
    data: PetCtSlice, steps: Sequence[tuple[AxisSettings, float]], rng: np.random.Generator
) -> PetCtSlice:
    """Apply ``(axis, value)`` steps in order; all draws come from ``rng``."""
    for axis, value in steps:
        plugin = get_distortion(axis.distortion)
        if plugin.domain not in SLICE_DOMAINS:
            raise PetctiqaError(
                f"axis {axis.code!r} ({axis.distortion}) acts on {plugin.domain}, not on the "
                "PET/CT slice"
            )
        data = plugin.with_options(dict(axis.options))(data, value, rng)
    return data


def render_distorted_slice(
    pet: Volume,
    ct: Volume,
    ct_index: int,
    settings: RenderSettings,
    steps: Sequence[tuple[AxisSettings, float]],
    rng: np.random.Generator,
    acquisition: PetAcquisition | None = None,
) -> np.ndarray:
    """The fused uint8 RGB render of CT slice ``ct_index`` after the slice-domain ``steps``."""
    from petctiqa.render import SUV_UNITS, fuse_pet_on_ct

    if settings.mode != "ct" and pet.unit not in SUV_UNITS:
        raise PetctiqaError(f"the render needs the PET in SUV, got {pet.unit!r}")
    data = apply_slice_distortions(pet_ct_slice(pet, ct, ct_index, acquisition), steps, rng)
    pet_on_ct = data.pet if settings.mode != "ct" else np.zeros_like(data.pet)
    return fuse_pet_on_ct(data.ct_hu, pet_on_ct, settings)
