"""Slice-domain axes before the unchanged render, on the real STS_001 PET/CT pair."""

from __future__ import annotations

import numpy as np
import pytest

from petctiqa.distort import distortion_grid
from petctiqa.distortions.pipeline import (
    apply_slice_distortions,
    render_distorted_slice,
    slice_axes,
)
from petctiqa.distortions.slices import pet_ct_slice
from petctiqa.errors import PetctiqaError
from petctiqa.protocol import load_dataset_protocol
from petctiqa.protocol_axes import AxisSettings
from petctiqa.render import render_slice
from petctiqa.seeding import rng_for

LOWDOSE = """
extends = "pet-ct-iqa-ds"
[protocol]
name = "lowdose"
[[distortions.axes]]
distortion = "pet_count_reduction"
levels = [1.0, 0.25, 0.1]
code = "d"
options = { sensitivity = 0.009, views = 120 }
[[distortions.axes]]
distortion = "pet_ct_misregistration"
levels = [0.0, 5.0, 10.0]
code = "m"
[[distortions.axes]]
distortion = "jpeg"
levels = [100]
"""


@pytest.fixture(scope="module")
def lowdose(tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "lowdose.toml"
    path.write_text(LOWDOSE)
    return load_dataset_protocol(path)


def test_neutral_levels_render_the_same_bytes_as_render_slice(sts001_volumes, lowdose):
    v = sts001_volumes
    axes = slice_axes(lowdose.distortions.axes)
    assert [a.code for a in axes] == ["d", "m"]
    neutral = [(a, a.levels[0]) for a in axes]
    image = render_distorted_slice(
        v.pet, v.ct, 30, lowdose.render, neutral, rng_for(0, "n"), v.acquisition
    )
    assert np.array_equal(image, render_slice(v.ct, v.pet, 30, lowdose.render))


def test_levels_change_the_render_reproducibly(sts001_volumes, lowdose):
    v = sts001_volumes
    axes = slice_axes(lowdose.distortions.axes)
    steps = [(axes[0], 0.1), (axes[1], 10.0)]
    a = render_distorted_slice(v.pet, v.ct, 30, lowdose.render, steps, rng_for(0, "s"))
    b = render_distorted_slice(v.pet, v.ct, 30, lowdose.render, steps, rng_for(0, "s"))
    reference = render_slice(v.ct, v.pet, 30, lowdose.render)
    assert np.array_equal(a, b) and a.shape == reference.shape
    assert np.abs(a.astype(int) - reference).mean() > 1.0


def test_options_of_the_axis_reach_the_plugin(sts001_volumes):
    v = sts001_volumes
    data = pet_ct_slice(v.pet, v.ct, 30, v.acquisition)
    axis = AxisSettings("pet_ct_misregistration", (0.0, 5.0), "m", (("axis", "x"),))
    moved = apply_slice_distortions(data, [(axis, 5.0)], rng_for(0, "o"))
    assert moved.pet_volume.affine[0, 3] == pytest.approx(v.pet.affine[0, 3] + 5.0)
    assert moved.pet_volume.affine[2, 3] == v.pet.affine[2, 3]


def test_fused_image_axes_are_not_slice_steps_and_build_grid_refuses_axes(sts001_volumes, lowdose):
    v = sts001_volumes
    data = pet_ct_slice(v.pet, v.ct, 30)
    jpeg = lowdose.distortions.axes[-1]
    with pytest.raises(PetctiqaError, match="acts on encoded_file, not on the PET/CT slice"):
        apply_slice_distortions(data, [(jpeg, 100.0)], rng_for(0, "j"))
    with pytest.raises(PetctiqaError, match=r"axes \(pet_count_reduction \(3 levels\), "):
        distortion_grid(lowdose.distortions)
