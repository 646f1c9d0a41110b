"""Aggregation against SUREAL 0.9.0 reference results on real Netflix opinion scores."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from petctiqa.errors import RatingError
from petctiqa.ratings.aggregate import (
    MleConvergenceWarning,
    aggregate,
    bt500_screening,
    icc,
    krippendorff_alpha,
    mle_subject_model,
    mos_statistics,
    score_matrix,
    zscore_scores,
)

NFLX = ["NFLX_dataset_public_raw", "NFLX_dataset_public_raw_last4outliers"]


def load(shared_data, name):
    folder = shared_data / "ratings"
    raw = pd.read_csv(folder / f"{name}.csv")
    ref = pd.read_csv(folder / f"{name}.sureal_reference.csv")
    raters = pd.read_csv(folder / f"{name}.sureal_raters.csv")
    matrix = score_matrix(
        raw.stimulus,
        raw.rater,
        raw.score,
        content=raw.stimulus.str.split("_").str[0],  # SUREAL's content = source video
        stimulus_order=list(ref.stimulus),
    )
    assert list(matrix.raters) == list(raters.rater)
    return matrix, ref, raters


@pytest.mark.parametrize("name", NFLX)
def test_mos_ci_and_bt500_match_sureal(shared_data, name):
    matrix, ref, raters = load(shared_data, name)
    result = aggregate(matrix, ci="normal", mle=False)
    np.testing.assert_allclose(result.stats.mos, ref.mos, atol=1e-6)
    np.testing.assert_allclose(result.stats.std_err, ref.mos_std_err, atol=1e-6)
    np.testing.assert_allclose(result.stats.ci_half, ref.mos_ci95_halfwidth, atol=1e-6)
    assert list(result.bt500.rejected.astype(int)) == list(raters.bt500_rejected)
    np.testing.assert_allclose(result.bt500_mos, ref.bt500_mos, atol=1e-6)


def test_bt500_rejects_the_documented_raters(shared_data):
    m1, _, _ = load(shared_data, NFLX[0])
    m2, _, _ = load(shared_data, NFLX[1])
    rej1 = [r for r, x in zip(m1.raters, bt500_screening(m1.scores).rejected, strict=True) if x]
    rej2 = [r for r, x in zip(m2.raters, bt500_screening(m2.scores).rejected, strict=True) if x]
    assert rej1 == ["rater03"]
    assert rej2 == ["rater27", "rater29", "rater30"]


def test_student_t_ci_is_default_and_wider(shared_data):
    matrix, ref, _ = load(shared_data, NFLX[0])
    st = mos_statistics(matrix.scores)
    assert st.ci_method == "t"
    np.testing.assert_allclose(st.ci_half, stats.t.ppf(0.975, 25) * ref.mos_std_err, atol=2e-6)
    five = mos_statistics(np.array([[0.0, 1, 2, 2, 4]]))
    assert five.ci_half[0] == pytest.approx(2.776445 * np.std([0, 1, 2, 2, 4], ddof=1) / np.sqrt(5))


@pytest.mark.parametrize("name", NFLX)
def test_mle_matches_sureal(shared_data, name):
    matrix, ref, raters = load(shared_data, name)
    mle = mle_subject_model(matrix.scores, matrix.content)
    assert mle.converged
    quality_tol = 1e-5 if name == NFLX[0] else 0.01
    np.testing.assert_allclose(mle.quality, ref.mle_quality, atol=quality_tol)
    np.testing.assert_allclose(mle.quality_std, ref.mle_quality_std, atol=1e-3)
    np.testing.assert_allclose(mle.bias, raters.mle_bias, atol=2e-3)
    assert mle.bias.mean() == pytest.approx(0.0, abs=1e-12)
    # inconsistency^2 and ambiguity^2 only enter as their sum, so the likelihood is flat along
    # v^2 - k, a^2 + k; SUREAL's iterate stops at a different point of that ridge.
    ref_v = raters.mle_inconsistency.to_numpy()
    if name == NFLX[0]:
        shift = mle.inconsistency**2 - ref_v**2
        unclipped = ref_v > 0
        assert np.ptp(shift[unclipped]) < 2e-4
        assert shift[unclipped].mean() == pytest.approx(0.00303, abs=2e-4)
    assert np.abs(mle.inconsistency - ref_v).max() < 0.13
    assert np.corrcoef(mle.inconsistency, ref_v)[0, 1] > 0.99


def test_icc_matches_shrout_fleiss_1979():
    data = np.array(
        [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]],
        dtype=float,
    )
    r = icc(data)
    assert (round(r.icc2_1, 2), round(r.icc2_k, 2)) == (0.29, 0.62)
    assert (round(r.icc3_1, 2), round(r.icc3_k, 2)) == (0.71, 0.91)


def test_krippendorff_alpha_matches_krippendorff_2011_example():
    n = np.nan
    coders = np.array(
        [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
            [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
        ]
    ).T
    assert round(krippendorff_alpha(coders, "nominal"), 3) == 0.743
    assert round(krippendorff_alpha(coders, "ordinal"), 3) == 0.815
    assert round(krippendorff_alpha(coders, "interval"), 3) == 0.849


def test_bt500_counts_unanimous_stimuli_like_sureal_and_resets_when_all_rejected():
    # 3 raters; stimulus 0 unanimous -> every score counts as both P and Q (SUREAL's rule)
    scores = np.array([[2.0, 2, 2], [1, 2, 3], [0, 4, 2], [3, 3, 4]])
    bt = bt500_screening(scores)
    assert bt.unanimous_stimuli == 1
    assert list(bt.p) == [1, 1, 1] and list(bt.q) == [1, 1, 1]
    assert bt.all_rejected_reset and not bt.rejected.any()
    assert "rejected every rater" in bt.reason(0)


def test_zscore_gives_zero_mean_unit_std_per_rater():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, (40, 4)).astype(float)
    scores[5, 1] = np.nan
    z = zscore_scores(scores)
    np.testing.assert_allclose(np.nanmean(z, axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(np.nanstd(z, axis=0, ddof=1), 1, atol=1e-12)
    assert np.isnan(z[5, 1])


def test_score_matrix_rejects_duplicates_and_keeps_missing_as_nan():
    with pytest.raises(RatingError, match="more than once"):
        score_matrix(["a", "a"], ["r1", "r1"], [1, 2])
    m = score_matrix(["a", "b", "a"], ["r2", "r1", "r1"], [1, 2, 3])
    assert m.stimuli == ("a", "b") and m.raters == ("r1", "r2")
    assert np.isnan(m.scores[1, 1]) and m.scores[0, 0] == 3


def test_aggregation_of_2700_images_by_5_raters_with_mle_is_fast():
    from petctiqa.ratings.simulate import (
        PUBLISHED_CELL_MOS,
        ObserverModel,
        draw_raters,
        simulate_scores,
    )

    cells = sorted(PUBLISHED_CELL_MOS)
    keys = [f"P{p}_s{k}_{c}" for p in range(20) for k in range(5) for c in cells]
    cell_list = [c for _ in range(100) for c in cells]
    raters = draw_raters([f"sim{i}" for i in range(5)], 0, ObserverModel())
    scores = simulate_scores(keys, cell_list, raters, 0)
    stim = np.repeat(keys, 5)
    rat = np.tile([r.rater for r in raters], len(keys))
    content = [k.rsplit("_", 1)[0] for k in stim]
    start = time.perf_counter()
    matrix = score_matrix(stim, rat, scores.ravel(), content)
    result = aggregate(matrix)
    elapsed = time.perf_counter() - start
    assert matrix.shape == (2700, 5)
    assert result.mle is not None and result.mle.converged
    assert elapsed < 5.0, elapsed


def test_screening_and_zscore_options(shared_data):
    matrix, ref, _ = load(shared_data, NFLX[1])
    screened = aggregate(matrix, screening=True, mle=False)
    np.testing.assert_allclose(screened.stats.mos, ref.bt500_mos, atol=1e-6)
    assert (screened.stats.n == 27).all()
    z = aggregate(matrix, zscore=True, mle=False)
    # z-scoring removes rater offsets: the result is a linear map of the z-score MOS, keeps
    # the grand mean, and ranks the stimuli almost like the MOS
    assert np.nanmean(z.stats.mos) == pytest.approx(np.nanmean(matrix.scores), abs=1e-9)
    assert stats.spearmanr(z.stats.mos, ref.mos).statistic > 0.98


def test_bt500_can_skip_unanimous_stimuli_for_small_panels():
    rng = np.random.default_rng(0)
    # 5 raters, 40 images: 20 unanimous, 20 with spread; rater 4 is erratic on both sides.
    # (With 5 raters no score can lie more than 2 population stds from the mean, so BT.500
    # finds almost nothing on small panels; skipping ties at least stops false alarms.)
    base = np.repeat(rng.integers(0, 5, (40, 1)), 5, axis=1).astype(float)
    base[20:, :4] += rng.integers(-1, 2, (20, 4))
    base[20:, 4] = np.where(np.arange(20) % 2, 4.0, 0.0)
    scores = np.clip(base, 0, 4)
    sureal = bt500_screening(scores)
    assert sureal.unanimous_stimuli == int((scores.std(axis=1) == 0).sum()) >= 20
    assert (sureal.p >= 20).all() and sureal.all_rejected_reset  # every rater an "outlier"
    skip = bt500_screening(scores, skip_unanimous=True)
    varied = bt500_screening(scores[scores.std(axis=1) > 0])
    assert varied.unanimous_stimuli == 0
    assert np.array_equal(skip.p, varied.p) and np.array_equal(skip.q, varied.q)
    np.testing.assert_allclose(skip.ratio_outliers, (varied.p + varied.q) / 40)
    assert not skip.all_rejected_reset


def simulated_panel(seed=0, patients=20, slices=5, raters=5):
    """The study ``collect-ratings simulate --raters 5`` makes on a 20 x 5-slice phantom dataset
    (2,700 images; content = source slice), with the simulated truth."""
    from petctiqa.ratings.simulate import (
        PUBLISHED_CELL_MOS,
        ObserverModel,
        draw_raters,
        latent_quality,
        rate_latent,
    )

    cells = sorted(PUBLISHED_CELL_MOS)
    keys = [
        f"PHANTOM-{p:04d}_s{k}_p{c[0]}g{c[1]}j{c[2]}"
        for p in range(1, patients + 1)
        for k in range(1, slices + 1)
        for c in cells
    ]
    cell_list = [c for _ in range(patients * slices) for c in cells]
    truth = draw_raters([f"sim{i:02d}" for i in range(1, raters + 1)], seed, ObserverModel())
    latent = latent_quality(keys, cell_list, seed)
    scores = rate_latent(latent, truth, seed).astype(float)
    content = np.repeat(np.arange(patients * slices), len(cells))
    return scores, content, truth, latent


def test_ml_no_longer_diverges_on_a_5_rater_study_and_says_it_is_degenerate():
    # The audit's study: SUREAL's Newton steps walked every ambiguity up 10 % per iteration
    # (to 2.6e40, quality std 1.1e40, numpy overflow) and still said converged.
    scores, content, truth, _ = simulated_panel(seed=0)
    matrix = score_matrix(
        np.repeat(np.arange(len(scores)).astype(str), 5),
        np.tile([r.rater for r in truth], len(scores)),
        scores.ravel(),
        np.repeat(content, 5),
    )
    with pytest.warns(MleConvergenceWarning, match="not reliable") as caught:
        ml = aggregate(matrix, mle_method="ml").mle
    assert {w.category for w in caught} == {MleConvergenceWarning}  # no overflow warnings
    for values in (ml.quality, ml.quality_std, ml.bias, ml.inconsistency, ml.ambiguity):
        assert np.isfinite(values).all()
    assert ml.ambiguity.max() <= 4.0 and ml.quality_std.max() < 1.0
    # ML is unbounded here (one rater's variance -> 0 makes the quality copy that rater):
    # reported, not hidden
    assert not ml.converged and ml.fallback_steps > 0
    assert any("floor" in p and "reml" in p for p in ml.problems)


def test_reml_on_a_simulated_2700_x_5_study_is_finite_on_scale_and_recovers_the_raters():
    scores, content, truth, latent = simulated_panel(seed=0)
    matrix = score_matrix(
        np.repeat(np.arange(len(scores)).astype(str), 5),
        np.tile([r.rater for r in truth], len(scores)),
        scores.ravel(),
        np.repeat(content, 5),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = aggregate(matrix)  # default: REML
    fit = result.mle
    assert fit.method == "reml" and fit.converged and fit.problems == ()
    assert fit.iterations < 2000
    for values in (fit.quality, fit.quality_std, fit.bias, fit.inconsistency, fit.ambiguity):
        assert np.isfinite(values).all()
    # on the 0..4 scale (a bias-corrected quality may sit a little past an end of the scale
    # where every rater gave that end score; here the extremes are -0.02 and 3.99)
    assert fit.quality.min() > -0.1 and fit.quality.max() < 4.1
    assert fit.quality_std.min() > 0.2 and fit.quality_std.max() < 0.35  # ~0.55/sqrt(5)
    assert fit.ambiguity.max() < 0.6
    # every rater has a positive inconsistency close to the noise the simulation put in
    # (rounding and clipping included: std of score - latent - bias)
    true_bias = np.array([r.bias for r in truth])
    realised = (scores - latent[:, None] - true_bias[None, :]).std(axis=0)
    assert (fit.inconsistency > 0.3).all()
    np.testing.assert_allclose(fit.inconsistency, realised, atol=0.03)
    np.testing.assert_allclose(fit.inconsistency, [r.inconsistency for r in truth], atol=0.12)
    assert np.corrcoef(fit.inconsistency, [r.inconsistency for r in truth])[0, 1] > 0.9
    # biases are recovered up to the attenuation of clipping at the ends of the scale
    np.testing.assert_allclose(fit.bias, true_bias - true_bias.mean(), atol=0.12)
    assert np.corrcoef(fit.bias, true_bias)[0, 1] > 0.99
    # the quality tracks the simulated latent quality better than the plain MOS
    mos_err = np.abs(result.stats.mos - latent).mean()
    assert np.abs(fit.quality - latent).mean() < mos_err


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reml_converges_on_other_simulated_panels(seed):
    scores, content, truth, latent = simulated_panel(seed=seed, patients=8)
    fit = mle_subject_model(scores, content, method="reml", min_variance=0.01)
    assert fit.converged, fit.problems
    true_bias = np.array([r.bias for r in truth])
    realised = (scores - latent[:, None] - true_bias[None, :]).std(axis=0)
    np.testing.assert_allclose(fit.inconsistency, realised, atol=0.06)
    assert fit.quality.min() > -0.15 and fit.quality.max() < 4.15


@pytest.mark.parametrize("name", NFLX)
def test_reml_default_stays_within_0_01_of_sureal_quality(shared_data, name):
    matrix, ref, raters = load(shared_data, name)
    result = aggregate(matrix, ci="normal")
    assert result.mle.method == "reml" and result.mle.converged
    np.testing.assert_allclose(result.mle.quality, ref.mle_quality, atol=0.0075)
    np.testing.assert_allclose(result.mle.quality_std, ref.mle_quality_std, atol=0.0035)
    np.testing.assert_allclose(result.mle.bias, raters.mle_bias, atol=1e-3)
    # the split of v^2 + a^2 differs by convention; the ranking of the raters does not
    assert stats.spearmanr(result.mle.inconsistency, raters.mle_inconsistency).statistic > 0.98
    ml = aggregate(matrix, ci="normal", mle_method="ml")
    assert ml.mle.method == "ml" and ml.mle.converged and ml.mle.fallback_steps == 0


def test_mle_reports_non_convergence_and_rejects_unknown_methods():
    scores, content, _, _ = simulated_panel(seed=0, patients=2)
    fit = mle_subject_model(scores, content, method="reml", max_iter=3)
    assert not fit.converged and fit.iterations == 3
    assert fit.problems[0].startswith("not converged in 3 iterations")
    with pytest.raises(RatingError, match="unknown MLE method"):
        mle_subject_model(scores, content, method="bayes")
