"""Simulated raters: calibration to the published MOS table, reproducibility, power."""

from __future__ import annotations

import numpy as np
import pytest

from petctiqa.ratings.simulate import (
    PUBLISHED_CELL_MOS,
    ObserverModel,
    calibrate_latent,
    draw_raters,
    expected_model_score,
    power_table,
    simulate_scores,
)


def test_published_table_is_read_in_manifest_level_order():
    assert len(PUBLISHED_CELL_MOS) == 27
    assert PUBLISHED_CELL_MOS[(0, 0, 0)] == 3.73  # reference render
    assert PUBLISHED_CELL_MOS[(2, 0, 0)] == 1.86  # Poisson level 2 alone
    assert PUBLISHED_CELL_MOS[(0, 2, 0)] == 1.93  # Gaussian level 2 alone
    assert PUBLISHED_CELL_MOS[(0, 0, 2)] == 1.98  # JPEG q40 alone
    assert PUBLISHED_CELL_MOS[(1, 2, 1)] == 1.06
    assert PUBLISHED_CELL_MOS[(2, 2, 2)] == 0.36


def test_calibration_inverts_rounding_and_clipping():
    model = ObserverModel()
    targets = np.array([0.26, 1.0, 2.0, 3.73])
    mu = calibrate_latent(targets, model)
    np.testing.assert_allclose(expected_model_score(mu, model), targets, atol=1e-6)
    assert mu[0] < 0.26 and mu[-1] > 3.73  # pushed outward to undo the clipping


def test_simulated_cell_mos_matches_the_published_table():
    cells = sorted(PUBLISHED_CELL_MOS)
    keys = [f"P{s}_{c}" for s in range(20) for c in cells]
    cell_list = [c for _ in range(20) for c in cells]
    raters = draw_raters([f"sim{i}" for i in range(50)], 0, ObserverModel())
    scores = simulate_scores(keys, cell_list, raters, 0)
    assert scores.min() >= 0 and scores.max() <= 4 and scores.dtype.kind == "i"
    image_mos = scores.mean(axis=1)
    cell_mos = np.array([image_mos[[c == k for c in cell_list]].mean() for k in cells])
    target = np.array([PUBLISHED_CELL_MOS[k] for k in cells])
    assert np.abs(cell_mos - target).max() < 0.25
    assert np.abs(cell_mos - target).mean() < 0.08
    assert np.corrcoef(cell_mos, target)[0, 1] > 0.995
    again = simulate_scores(keys, cell_list, raters, 0)
    assert np.array_equal(scores, again)
    assert not np.array_equal(scores, simulate_scores(keys, cell_list, raters, 1))


def test_power_table_widths_shrink_with_more_raters():
    rows = power_table(range(3, 11), seed=0, images_per_cell=10, panels=8)
    widths = [r.expected_ci_width_t for r in rows]
    assert [r.raters for r in rows] == list(range(3, 11))
    assert all(a > b for a, b in zip(widths[:-1], widths[1:], strict=True))
    five = rows[2]
    assert five.expected_ci_width_t == pytest.approx(five.analytic_ci_width_t, rel=0.15)
    assert five.expected_ci_width_t / five.expected_ci_width_normal == pytest.approx(
        2.776445 / 1.95996, rel=1e-6
    )
