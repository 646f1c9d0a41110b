"""PET/CT misregistration on the real STS_001 pair: a shift in patient mm, resampled like the render."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from petctiqa.distortions import get_distortion
from petctiqa.distortions.misregistration import Misregistration
from petctiqa.distortions.slices import PetCtSlice, pet_ct_slice
from petctiqa.errors import PetctiqaError
from petctiqa.render import resample_pet_to_ct_slice
from petctiqa.seeding import rng_for


@pytest.fixture(scope="module")
def pair(sts001_volumes):
    v = sts001_volumes
    return pet_ct_slice(v.pet, v.ct, 30, v.acquisition)


def test_zero_shift_is_the_render_resampling(pair, sts001_volumes):
    v = sts001_volumes
    out = get_distortion("pet_ct_misregistration")(pair, 0.0, rng_for(0, "m"))
    assert np.array_equal(out.pet, resample_pet_to_ct_slice(v.pet, v.ct, 30))


def test_a_shift_of_one_pet_pixel_along_x_moves_the_pet_by_one_pixel(pair, sts001_volumes):
    pet = sts001_volumes.pet
    step = float(pet.affine[0, 0])  # +x per PET column (LPS), 4.6875 mm
    assert step == pytest.approx(4.6875)
    moved = Misregistration("x")(pair, step, rng_for(0, "m"))
    # the same as the PET whose columns are moved one to the right (the value of column i-1)
    rolled = np.zeros_like(pet.array)
    rolled[:, :, 1:] = pet.array[:, :, :-1]
    expected = resample_pet_to_ct_slice(dataclasses.replace(pet, array=rolled), pair.ct_volume, 30)
    inside = np.ones_like(expected, bool)
    np.testing.assert_allclose(moved.pet[inside], expected[inside], rtol=1e-5, atol=1e-5)
    assert not np.allclose(moved.pet, pair.pet)


@pytest.mark.parametrize("shift", [5.0, 10.0])
def test_a_z_shift_takes_the_pet_from_another_plane(pair, sts001_volumes, shift):
    """PET moved +shift along z equals the unmoved PET read at the CT slice moved -shift."""
    v = sts001_volumes
    moved = get_distortion("pet_ct_misregistration")(pair, shift, rng_for(0, "m"))
    ct_affine = v.ct.affine.copy()
    ct_affine[2, 3] -= shift
    ct_back = dataclasses.replace(v.ct, affine=ct_affine)
    np.testing.assert_allclose(
        moved.pet, resample_pet_to_ct_slice(v.pet, ct_back, 30), rtol=1e-5, atol=1e-5
    )
    change = np.abs(moved.pet - pair.pet).mean() / pair.pet.mean()
    assert change > 0.05  # several % of the mean uptake moves at 5-10 mm
    assert np.array_equal(moved.ct_hu, pair.ct_hu)


def test_needs_the_volumes_and_a_known_axis():
    bare = PetCtSlice(np.zeros((4, 4), np.float32), None, 1.0, 1.0)
    with pytest.raises(PetctiqaError, match="needs a PetCtSlice cut from its PET and CT volumes"):
        get_distortion("pet_ct_misregistration")(bare, 5.0, rng_for(0, "m"))
    with pytest.raises(PetctiqaError, match="axis must be one of x, y, z"):
        get_distortion("pet_ct_misregistration").with_options({"axis": "w"})
