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
from petctiqa.distortions.design import ImageCell
from petctiqa.distortions.registry import get_distortion
from petctiqa.distortions.slices import PetAcquisition, PetCtSlice, pet_ct_slice
from petctiqa.errors import PetctiqaError
from petctiqa.protocol import RenderSettings
from petctiqa.protocol_axes import AxisSettings
from petctiqa.render import SUV_UNITS, fuse_pet_on_ct
from petctiqa.seeding import rng_for

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
    if settings.mode != "ct" and pet.unit not in SUV_UNITS:
        raise PetctiqaError(f"the render needs the PET in SUV, got {pet.unit!r}")
    data = apply_slice_distortions(pet_ct_slice(pet, ct, ct_index, acquisition), steps, rng)
    pet_on_ct = data.pet if settings.mode != "ct" else np.zeros_like(data.pet)
    return fuse_pet_on_ct(data.ct_hu, pet_on_ct, settings)


def render_volume_cells(
    pet: Volume,
    ct: Volume,
    ct_index: int,
    settings: RenderSettings,
    cells: Sequence[ImageCell],
    seed: int,
    slice_id: str,
    acquisition: PetAcquisition | None = None,
) -> dict[str, np.ndarray]:
    """The fused render of every distinct ``volume_key`` of ``cells`` (the empty key, the
    reference render, is left to the caller).

    The PET steps and the CT steps run as two chains from the same cut slice (a PET step
    changes only the PET, a CT step only the CT, and every PET axis comes before every CT
    axis, so PET steps see the unchanged CT); each chain's state after a step is computed once
    per key (:meth:`ImageCell.volume_steps`) with the generator
    ``rng_for(seed, "<slice_id>_<key>")``, and the render fuses one state of each chain.
    """
    if settings.mode != "ct" and pet.unit not in SUV_UNITS:
        raise PetctiqaError(f"the render needs the PET in SUV, got {pet.unit!r}")
    base = pet_ct_slice(pet, ct, ct_index, acquisition)
    cache: dict[str, PetCtSlice] = {}
    renders: dict[str, np.ndarray] = {}
    for cell in cells:
        key = cell.volume_key
        if not key or key in renders:
            continue
        pet_state = _run_chain(base, cell.volume_steps("pet_activity"), cache, seed, slice_id)
        ct_state = _run_chain(base, cell.volume_steps("ct_hu"), cache, seed, slice_id)
        pet_on_ct = pet_state.pet if settings.mode != "ct" else np.zeros_like(pet_state.pet)
        renders[key] = fuse_pet_on_ct(ct_state.ct_hu, pet_on_ct, settings)
    return renders


def _run_chain(
    data: PetCtSlice,
    steps: Sequence[tuple[str, AxisSettings, float]],
    cache: dict[str, PetCtSlice],
    seed: int,
    slice_id: str,
) -> PetCtSlice:
    for key, axis, value in steps:
        if key not in cache:
            plugin = get_distortion(axis.distortion).with_options(dict(axis.options))
            cache[key] = plugin(data, value, rng_for(seed, f"{slice_id}_{key}"))
        data = cache[key]
    return data
