"""CT sparse-view streaks on the real CRLM-CT-1004 abdomen slice."""

from __future__ import annotations

import numpy as np
import pytest

from petctiqa.distortions import get_distortion
from petctiqa.errors import PetctiqaError
from petctiqa.seeding import rng_for


def test_streaks_grow_as_views_fall_and_keep_the_mean(abdomen):
    data, liver = abdomen
    plugin = get_distortion("ct_sparse_view").with_options({"reference_views": 360})
    std = {}
    for views in (30, 60, 120):
        out = plugin(data, views, rng_for(0, "s"))
        streaks = out.ct_hu - data.ct_hu
        std[views] = streaks[liver].std()
        assert abs(streaks[liver].mean()) < 2.0, views
    # angular undersampling: each halving of the views makes the streaks clearly stronger
    assert std[30] > 2 * std[60] > 4 * std[120] > 20.0, std


def test_zero_views_is_off_and_bad_views_are_refused(abdomen):
    data, _ = abdomen
    plugin = get_distortion("ct_sparse_view")
    assert np.array_equal(plugin(data, 0, rng_for(0, "s")).ct_hu, data.ct_hu)
    with pytest.raises(PetctiqaError, match="views must be 0 \\(off\\) or an integer >= 2"):
        plugin(data, 12.5, rng_for(0, "s"))
    with pytest.raises(PetctiqaError, match=r"views \(400\) must be at most half of reference"):
        plugin(data, 400, rng_for(0, "s"))
