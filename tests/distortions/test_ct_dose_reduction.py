"""CT dose reduction on a real abdominal CT slice: inserted noise std ~ sqrt(1/f - 1), mean kept."""

from __future__ import annotations

import numpy as np
import pytest

from petctiqa.distortions import get_distortion
from petctiqa.distortions.ct_dose import CtDoseModel
from petctiqa.distortions.slices import PetCtSlice
from petctiqa.errors import PetctiqaError
from petctiqa.seeding import rng_for


def test_inserted_noise_std_scales_as_sqrt_of_1_over_f_minus_1(abdomen):
    data, liver = abdomen
    assert liver.sum() > 10_000  # > 60 cm^2 of soft tissue
    assert data.ct_hu[liver].mean() == pytest.approx(98, abs=3)
    plugin = get_distortion("ct_dose_reduction")
    std = {}
    for fraction in (0.5, 0.25, 0.1):
        out = plugin(data, fraction, rng_for(3, f"ct/{fraction}"))
        inserted = out.ct_hu - data.ct_hu
        std[fraction] = inserted[liver].std()
        # mean HU in the region kept within 2 HU
        assert abs(out.ct_hu[liver].mean() - data.ct_hu[liver].mean()) < 2.0, fraction
        assert np.array_equal(out.pet, data.pet)  # the PET is not touched
    # at half dose the added noise equals the model's full-dose noise: the order of this
    # image's own noise (~8-12 HU)
    assert 6.0 < std[0.5] < 16.0
    for fraction in (0.25, 0.1):
        expected = np.sqrt(1 / fraction - 1) / np.sqrt(1 / 0.5 - 1)
        assert std[fraction] / std[0.5] == pytest.approx(expected, rel=0.1), std


def test_full_dose_is_identity_and_the_noise_is_seeded(abdomen):
    data, _ = abdomen
    model = CtDoseModel(views=90)  # fewer views: quicker, same law
    assert np.array_equal(model(data, 1.0, rng_for(0, "a")).ct_hu, data.ct_hu)
    a = model(data, 0.3, rng_for(0, "a")).ct_hu
    assert np.array_equal(a, model(data, 0.3, rng_for(0, "a")).ct_hu)
    assert not np.array_equal(a, model(data, 0.3, rng_for(0, "b")).ct_hu)


def test_electronic_noise_adds_where_few_quanta_arrive(abdomen):
    """With a very low I0 the electronic term dominates: more noise than with none."""
    data, liver = abdomen
    quiet = CtDoseModel(i0=2e4, electronic_sigma=0.0, views=90)
    noisy = CtDoseModel(i0=2e4, electronic_sigma=30.0, views=90)
    rng = rng_for(5, "e")
    a = quiet.noise_hu(data.ct_hu, data.pixel_mm, 0.25, rng)[liver].std()
    b = noisy.noise_hu(data.ct_hu, data.pixel_mm, 0.25, rng_for(5, "e"))[liver].std()
    assert b > 1.1 * a


def test_a_slice_without_ct_is_refused():
    data = PetCtSlice(np.zeros((8, 8), np.float32), None, 1.0, 1.0)
    with pytest.raises(PetctiqaError, match="ct_dose_reduction acts on a PetCtSlice with a CT"):
        get_distortion("ct_dose_reduction")(data, 0.5, rng_for(0, "x"))
