from __future__ import annotations

import numpy as np
import pytest

from petctiqa.dataset.select import (
    NoUsableSlices,
    body_fractions,
    choose_slices,
    order_candidates,
    read_patient_list,
)
from petctiqa.errors import DatasetError

POSITIONS = np.arange(100, dtype=np.float64)  # one CT slice per mm, 0..99 mm


def test_slices_spread_evenly_over_the_inner_overlap():
    chosen = choose_slices(POSITIONS, np.ones(100), (0.0, 99.0), 5, 0.1, 0.15)
    # inner range [9.9, 89.1]; targets 9.9, 29.7, 49.5, 69.3, 89.1 -> nearest slices
    assert chosen == [10, 30, 49, 69, 89]


def test_slices_with_too_little_body_are_skipped():
    body = np.ones(100)
    body[30] = 0.1  # below min_body_fraction 0.15
    body[:20] = 0.0
    chosen = choose_slices(POSITIONS, body, (0.0, 99.0), 5, 0.1, 0.15)
    assert chosen == [20, 29, 49, 69, 89]
    assert all(body[i] >= 0.15 for i in chosen)


def test_each_target_gets_a_distinct_slice():
    body = np.zeros(100)
    body[[40, 41, 42]] = 1.0
    assert choose_slices(POSITIONS, body, (0.0, 99.0), 3, 0.1, 0.5) == [40, 41, 42]


def test_single_slice_is_the_centre_of_the_overlap():
    assert choose_slices(POSITIONS, np.ones(100), (20.0, 60.0), 1, 0.1, 0.15) == [40]


def test_too_few_usable_slices_raise():
    body = np.zeros(100)
    body[50] = 1.0
    with pytest.raises(NoUsableSlices, match="only 1 CT slices"):
        choose_slices(POSITIONS, body, (0.0, 99.0), 2, 0.1, 0.15)


def test_body_fraction_counts_pixels_above_minus_500_hu():
    ct = np.full((2, 4, 4), -1000.0, dtype=np.float32)
    ct[0, :2, :] = 40.0  # half body
    ct[1, 0, 0] = -499.0
    np.testing.assert_allclose(body_fractions(ct), [0.5, 1 / 16])


def test_candidate_order_is_seeded_and_stable():
    ids = [f"P{i:02d}" for i in range(10)]
    first = order_candidates(ids, seed=0)
    assert sorted(first) == ids
    assert order_candidates(list(reversed(ids)), seed=0) == first
    assert order_candidates(ids, seed=1) != first


def test_patient_list_order_is_kept_and_checked(tmp_path):
    listing = tmp_path / "patients.txt"
    listing.write_text("# chosen by hand\nP03\n\nP01  # second\n")
    chosen = read_patient_list(listing)
    assert chosen == ["P03", "P01"]
    assert order_candidates(["P01", "P02", "P03"], 0, chosen) == ["P03", "P01"]
    with pytest.raises(DatasetError, match="'P09' from the patient list"):
        order_candidates(["P01"], 0, ["P09"])
    listing.write_text("P01\nP01\n")
    with pytest.raises(DatasetError, match="listed twice"):
        read_patient_list(listing)
