"""PET count reduction on a real FDG slice: mean kept, noise variance ~ 1 / f."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from petctiqa.distortions import get_distortion
from petctiqa.distortions.pet_counts import PetCountModel
from petctiqa.distortions.slices import PetCtSlice, pet_ct_slice
from petctiqa.errors import PetctiqaError
from petctiqa.seeding import rng_for

SEEDS = range(6)


def _outputs(model, data, fraction, seeds=SEEDS):
    return [model(data, fraction, rng_for(11, f"pet/{fraction}/{s}")).pet for s in seeds]


def test_acquisition_facts_come_from_the_headers(sts001_volumes):
    acq = sts001_volumes.acquisition
    assert acq.frame_duration_s == 240.0  # ActualFrameDuration 240000 ms
    assert acq.decay_factor == pytest.approx(1.15077)
    assert acq.bqml_per_suv == pytest.approx(1 / 2.42903e-4, rel=1e-5)  # the SUV factor's inverse
    assert acq.from_headers == ("bqml_per_suv", "decay_factor", "frame_duration_s")


def test_mean_activity_in_the_liver_is_kept_within_2_percent(liver_slice):
    data, liver = liver_slice.data, liver_slice.liver
    assert liver.sum() > 300  # a large region: > 65 cm^2
    truth = data.pet[liver].mean()
    assert truth == pytest.approx(2.14, abs=0.02)
    for fraction in (0.25, 0.1):
        outputs = _outputs(get_distortion("pet_count_reduction"), data, fraction)
        means = [out[liver].mean() for out in outputs]
        assert abs(np.mean(means) / truth - 1) < 0.02, (fraction, means)
        assert outputs[0].dtype == np.float32 and outputs[0].shape == data.pet.shape


@pytest.mark.parametrize(("mode", "expected"), [("insert", "1/f - 1"), ("resimulate", "1/f")])
def test_noise_variance_scales_as_the_count_statistics_say(liver_slice, mode, expected):
    """resimulate: the whole acquisition at f, variance ~ 1/f. insert (default): the input is
    the full-count scan, the added variance ~ 1/f - 1 so that the total goes as 1/f."""
    data, body = liver_slice.data, liver_slice.body
    model = PetCountModel(mode=mode)
    variance = {}
    for fraction in (0.5, 0.25, 0.1):
        outputs = _outputs(model, data, fraction, range(4))
        variance[fraction] = np.mean([(out - data.pet)[body].var() for out in outputs])
    law = {"1/f - 1": lambda f: 1 / f - 1, "1/f": lambda f: 1 / f}[expected]
    for fraction in (0.25, 0.1):
        ratio = variance[fraction] / variance[0.5]
        assert ratio == pytest.approx(law(fraction) / law(0.5), rel=0.15), (fraction, ratio)


def test_full_counts_leave_the_slice_unchanged_and_draws_are_seeded(liver_slice):
    data = liver_slice.data
    plugin = get_distortion("pet_count_reduction")
    same = plugin(data, 1.0, rng_for(0, "x"))
    assert np.array_equal(same.pet, data.pet) and same.pet is not data.pet
    a, b = (plugin(data, 0.25, rng_for(0, "y")).pet for _ in range(2))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, plugin(data, 0.25, rng_for(0, "z")).pet)
    with pytest.raises(PetctiqaError, match=r"fraction must be in \[0.001, 1.0\]"):
        plugin(data, 1.5, rng_for(0, "x"))


def test_attenuation_comes_from_the_ct(sts001_volumes):
    """The real PET/CT pair of STS_001 (CT crop of the thigh): the CT's mu lowers the detected
    counts against no attenuation, and the lower counts raise the noise."""
    data = pet_ct_slice(sts001_volumes.pet, sts001_volumes.ct, 30, sts001_volumes.acquisition)
    assert data.pet.shape == (202, 198) and data.ct_hu is not None
    model = PetCountModel()
    with_ct = model.expected_counts(data)[0].sum()
    air = dataclasses.replace(data, ct_hu=np.full_like(data.ct_hu, -1000.0))
    without = model.expected_counts(air)[0].sum()
    # ~20 cm of thigh at mu 0.096/cm: well under half of the counts survive on average
    assert 0.1 < with_ct / without < 0.5
    noise_ct = np.std(model(data, 0.25, rng_for(1, "ct")).pet - data.pet)
    noise_air = np.std(model(air, 0.25, rng_for(1, "ct")).pet - data.pet)
    assert noise_ct > 1.3 * noise_air


def test_wrong_data_and_options_are_refused(liver_slice):
    plugin = get_distortion("pet_count_reduction")
    with pytest.raises(PetctiqaError, match="acts on a PetCtSlice, got ndarray"):
        plugin(np.zeros((8, 8)), 0.5, rng_for(0, "x"))
    with pytest.raises(PetctiqaError, match="mode must be one of insert, resimulate"):
        plugin.with_options({"mode": "fast"})
    with pytest.raises(PetctiqaError, match="unexpected keyword argument 'sensitivty'"):
        plugin.with_options({"sensitivty": 0.01})
    with pytest.raises(PetctiqaError, match="PET unit must be SUVbw, GML or BQML"):
        PetCtSlice(np.zeros((4, 4), np.float32), None, 4.0, 3.0, pet_unit="CNTS")
    bad = np.zeros((4, 4), np.float32)
    bad[1, 1] = np.nan
    with pytest.raises(PetctiqaError, match="PET slice holds NaN or infinite values"):
        PetCtSlice(bad, None, 4.0, 3.0)
    with pytest.raises(PetctiqaError, match="differ in shape"):
        PetCtSlice(np.zeros((4, 4), np.float32), np.zeros((4, 5), np.float32), 4.0, 3.0)
