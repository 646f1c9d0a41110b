"""Opinion-score aggregation: MOS, confidence intervals, BT.500 screening, z-scores, the MLE
subject model and inter-rater agreement.

Everything here is pure NumPy over a score matrix ``scores[e, s]`` (E stimuli x S raters,
``NaN`` = not rated), so it runs the same on a reader study, an imported spreadsheet or any long
CSV. Conventions follow Netflix's SUREAL (0.9) wherever SUREAL defines them, so results can be
checked against it:

- MOS is the mean over the raters who rated the stimulus; ``std`` is the sample std (ddof=1).
- The normal-approximation 95% CI half-width is ``1.95996 * std / sqrt(n)`` (SUREAL); the default
  here is Student's t with ``n - 1`` degrees of freedom, which is honest for 5 raters.
- ITU-R BT.500 observer screening is SUREAL's kurtosis rule (see :func:`bt500_screening`).
- The subject model (:mod:`petctiqa.ratings.subject_model`) is SUREAL's (Li & Bampis): score =
  quality(e) + bias(s) + noise with variance inconsistency(s)^2 + ambiguity(content(e))^2.
  ``method="ml"`` is SUREAL's ``MaximumLikelihoodEstimationModel`` (the same damped Newton updates,
  refresh rate 0.1, stop when ||delta quality|| < 1e-8, bias forced to zero mean), safeguarded
  against steps that walk down the likelihood; ``method="reml"`` (the default of :func:`aggregate`)
  solves the restricted-likelihood equations instead, which stay well-posed with 5 raters.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from petctiqa.errors import RatingError
from petctiqa.ratings.subject_model import MleConvergenceWarning, MleResult, mle_subject_model

SUREAL_Z95 = 1.95996
"""The normal 97.5% quantile as SUREAL writes it (used for the ``normal`` CI)."""

CI_METHODS = ("t", "normal")


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ScoreMatrix:
    """Scores of E stimuli by S raters; ``scores[e, s]`` is NaN where rater s did not rate e.

    ``content[e]`` is an integer content (source) index used by the MLE model's ambiguity term
    (for PET-CT-IQA-DS: the source slice; SUREAL: the reference video). All zeros when unknown.
    """

    stimuli: tuple[str, ...]
    raters: tuple[str, ...]
    scores: np.ndarray
    content: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.scores.shape


@dataclass(frozen=True)
class MosStats:
    """Per-stimulus statistics (arrays of length E). ``ci_half`` is the CI half-width."""

    mos: np.ndarray
    std: np.ndarray
    n: np.ndarray
    std_err: np.ndarray
    ci_half: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    ci_method: str
    confidence: float


@dataclass(frozen=True)
class Bt500Result:
    """ITU-R BT.500 screening: per-rater counts P (high outliers) and Q (low outliers)."""

    p: np.ndarray
    q: np.ndarray
    ratio_outliers: np.ndarray
    """(P + Q) / (E * R): share of stimuli where the rater is an outlier; rejection needs > 0.05."""
    ratio_symmetry: np.ndarray
    """|P - Q| / (P + Q): rejection needs < 0.3 (outliers on both sides); NaN when P + Q = 0."""
    rejected: np.ndarray
    all_rejected_reset: bool
    """True when the rule rejected every rater and so (as BT.500/SUREAL say) none is rejected."""
    unanimous_stimuli: int
    """Stimuli with zero spread; SUREAL counts every score there as both P and Q (see notes)."""

    def reason(self, index: int) -> str:
        """One-line explanation of the decision for rater ``index``."""
        p, q = int(self.p[index]), int(self.q[index])
        r1 = self.ratio_outliers[index]
        r2 = self.ratio_symmetry[index]
        base = f"P={p} Q={q} (P+Q)/E={r1:.3f}"
        if p + q:
            base += f" |P-Q|/(P+Q)={r2:.3f}"
        if self.rejected[index]:
            return f"rejected: {base}; outlier on >5% of stimuli, on both sides (ratio < 0.3)"
        if self.all_rejected_reset:
            return f"kept: {base}; the rule rejected every rater, so none is rejected"
        if r1 <= 0.05:
            return f"kept: {base}; outlier on <=5% of stimuli"
        return f"kept: {base}; outliers are one-sided (ratio >= 0.3), a bias not an inconsistency"


@dataclass(frozen=True)
class IccResult:
    """Intraclass correlations (Shrout & Fleiss 1979; McGraw & Wong 1996) on complete rows.

    ``icc2_1``/``icc2_k``: two-way random effects, absolute agreement, single rater / mean of k.
    ``icc3_1``/``icc3_k``: two-way mixed effects, consistency, single rater / mean of k.
    """

    icc2_1: float
    icc2_k: float
    icc3_1: float
    icc3_k: float
    n_stimuli: int
    k_raters: int


@dataclass(frozen=True)
class Aggregation:
    """Everything :func:`aggregate` computes for one score matrix."""

    matrix: ScoreMatrix
    stats: MosStats
    bt500: Bt500Result
    bt500_mos: np.ndarray
    mle: MleResult | None
    icc: IccResult | None
    alpha_interval: float
    alpha_ordinal: float
    zscored: bool
    screened: bool


# ----------------------------------------------------------------------------- building


def score_matrix(
    stimuli: np.ndarray | list[str],
    raters: np.ndarray | list[str],
    scores: np.ndarray | list[float],
    content: np.ndarray | list[str] | None = None,
    stimulus_order: list[str] | None = None,
) -> ScoreMatrix:
    """Pivot long rows (stimulus, rater, score) into a :class:`ScoreMatrix` (vectorised).

    Stimuli keep first-appearance order unless ``stimulus_order`` is given; raters are sorted.
    ``content`` gives each row's content label (constant per stimulus). Raises
    :class:`RatingError` on a repeated (stimulus, rater) pair or a non-finite score.
    """
    stim = np.asarray(stimuli, dtype=object).astype(str)
    rat = np.asarray(raters, dtype=object).astype(str)
    val = np.asarray(scores, dtype=float)
    if not (len(stim) == len(rat) == len(val)):
        raise ValueError("stimuli, raters and scores must have the same length")
    bad = ~np.isfinite(val)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RatingError(f"score of rater {rat[i]!r} for {stim[i]!r} is not a number")
    if stimulus_order is None:
        _, first = np.unique(stim, return_index=True)
        stimulus_order = [str(s) for s in stim[np.sort(first)]]
    stim_names = tuple(stimulus_order)
    lookup = {s: i for i, s in enumerate(stim_names)}
    try:
        e_idx = np.fromiter((lookup[s] for s in stim), dtype=np.int64, count=len(stim))
    except KeyError as exc:
        raise RatingError(f"stimulus {exc.args[0]!r} is not in the study") from None
    rater_names, s_idx = np.unique(rat, return_inverse=True)
    flat = e_idx * len(rater_names) + s_idx
    uniq, counts = np.unique(flat, return_counts=True)
    if (counts > 1).any():
        dup = int(uniq[np.argmax(counts > 1)])
        raise RatingError(
            f"rater {rater_names[dup % len(rater_names)]!r} rated "
            f"{stim_names[dup // len(rater_names)]!r} more than once"
        )
    mat = np.full((len(stim_names), len(rater_names)), np.nan)
    mat[e_idx, s_idx] = val
    content_idx = np.zeros(len(stim_names), dtype=np.int64)
    if content is not None:
        labels = np.asarray(content, dtype=object).astype(str)
        _, codes = np.unique(labels, return_inverse=True)
        content_idx[e_idx] = codes
        # re-number to 0..C-1 over the contents that actually occur
        _, content_idx = np.unique(content_idx, return_inverse=True)
    return ScoreMatrix(stim_names, tuple(str(r) for r in rater_names), mat, content_idx)


def check_scale(matrix: ScoreMatrix, scale_min: float, scale_max: float) -> None:
    """Raise :class:`RatingError` naming the first score outside ``[scale_min, scale_max]``."""
    vals = matrix.scores
    bad = (vals < scale_min) | (vals > scale_max)
    if bad.any():
        e, s = np.argwhere(bad)[0]
        raise RatingError(
            f"score {vals[e, s]:g} of rater {matrix.raters[s]!r} for {matrix.stimuli[e]!r} is "
            f"outside the scale {scale_min:g}..{scale_max:g}"
        )


# ----------------------------------------------------------------------------- MOS + CI


def _means(
    scores: np.ndarray, axis: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Means ignoring NaN (unrated) per stimulus (``axis=1``, rows) or per rater (``axis=0``):
    rated mask, count, mean, and deviations from the mean (0 where unrated). A stimulus or rater
    with no ratings has a NaN mean."""
    mask = ~np.isnan(scores)
    n = mask.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(mask, scores, 0.0).sum(axis=axis) / n
        dev = np.where(mask, scores - np.expand_dims(mean, axis), 0.0)
    return mask, n, mean, dev


def mos_statistics(scores: np.ndarray, ci: str = "t", confidence: float = 0.95) -> MosStats:
    """MOS, sample std (ddof=1), n and the CI of the mean per stimulus (row).

    ``ci="t"``: Student's t with n-1 dof (default). ``ci="normal"``: SUREAL's
    ``1.95996 * std / sqrt(n)`` (only defined for 95%). Rows with n < 2 get NaN std and CI.
    """
    if ci not in CI_METHODS:
        raise RatingError(f"unknown CI method {ci!r}; use one of {', '.join(CI_METHODS)}")
    _, n, mos, dev = _means(scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt((dev**2).sum(axis=1) / (n - 1))
        std = np.where(n >= 2, std, np.nan)
        std_err = std / np.sqrt(n)
    if ci == "normal":
        exact95 = abs(confidence - 0.95) < 1e-12
        z = SUREAL_Z95 if exact95 else stats.norm.ppf(0.5 + confidence / 2)
        half = z * std_err
    else:
        dof = np.maximum(n - 1, 1)
        tq = stats.t.ppf(0.5 + confidence / 2, dof)
        half = np.where(n >= 2, tq * std_err, np.nan)
    return MosStats(
        mos=mos,
        std=std,
        n=n,
        std_err=std_err,
        ci_half=half,
        ci_low=mos - half,
        ci_high=mos + half,
        ci_method=ci,
        confidence=confidence,
    )


# ----------------------------------------------------------------------------- BT.500


def bt500_screening(
    scores: np.ndarray, repetitions: int = 1, skip_unanimous: bool = False
) -> Bt500Result:
    """ITU-R BT.500-13 observer screening exactly as SUREAL implements it.

    Per stimulus: mean m, std s (ddof=0) and Pearson kurtosis b2 = m4 / m2^2 over the raters who
    rated it. If 2 <= b2 <= 4 the scores count as normal and a rater's score x adds to P when
    x >= m + 2s and to Q when x <= m - 2s; otherwise the bounds are m +- sqrt(20) s. A rater is
    rejected when (P+Q)/(E*R) > 0.05 and |P-Q|/(P+Q) < 0.3; if every rater would be rejected none
    is. As in SUREAL, a stimulus whose scores are all equal (s = 0, b2 undefined) counts every
    score as both P and Q -- this is common with 5 raters on a 0..4 scale; the count is reported.
    ``skip_unanimous=True`` lets such stimuli add no outliers (the only deviation from SUREAL;
    it changes nothing where the scores vary).
    """
    mask, n, mu, dev = _means(scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        m2 = (dev**2).sum(axis=1) / n
        m4 = (dev**4).sum(axis=1) / n
        kurt = np.where(m2 > 0, m4 / m2**2, np.nan)
        sigma = np.sqrt(m2)
    normal = (kurt >= 2) & (kurt <= 4)
    width = np.where(normal, 2.0, np.sqrt(20.0)) * sigma
    counted = mask & ~((m2 == 0) & skip_unanimous)[:, None]
    high = counted & (np.nan_to_num(scores, nan=-np.inf) >= (mu + width)[:, None])
    low = counted & (np.nan_to_num(scores, nan=np.inf) <= (mu - width)[:, None])
    p = high.sum(axis=0).astype(float)
    q = low.sum(axis=0).astype(float)
    e_count = scores.shape[0]
    ratio1 = (p + q) / (e_count * repetitions)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio2 = np.abs(p - q) / (p + q)
    rejected = (ratio1 > 0.05) & (ratio2 < 0.3)
    reset = bool(rejected.all()) and rejected.size > 0
    if reset:
        rejected = np.zeros_like(rejected)
    return Bt500Result(
        p=p,
        q=q,
        ratio_outliers=ratio1,
        ratio_symmetry=ratio2,
        rejected=rejected,
        all_rejected_reset=reset,
        unanimous_stimuli=int(((m2 == 0) & (n > 0)).sum()),
    )


# ----------------------------------------------------------------------------- z-scores


def zscore_scores(scores: np.ndarray) -> np.ndarray:
    """Per-rater z-scores (SUREAL ``zscore_mode``): subtract the rater's mean over the stimuli
    they rated and divide by their sample std (ddof=1). Raters with zero spread map to 0."""
    mask, n, mu, dev = _means(scores, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt((dev**2).sum(axis=0) / (n - 1))
        z = (scores - mu[None, :]) / sd[None, :]
    z = np.where(mask & ~np.isfinite(z), 0.0, z)
    return z


def zscore_to_scale(z: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Map z-scores back onto the original scale: grand mean + mean rater std * z."""
    grand = np.nanmean(scores)
    _, n, _, dev = _means(scores, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt((dev**2).sum(axis=0) / (n - 1))
    return grand + np.nanmean(sd[np.isfinite(sd)]) * z


# ----------------------------------------------------------------------------- agreement


def icc(scores: np.ndarray) -> IccResult | None:
    """ICC(2,1), ICC(2,k), ICC(3,1), ICC(3,k) from a two-way ANOVA on the stimuli that every
    rater rated. Returns None when fewer than 2 complete stimuli or 2 raters remain."""
    complete = scores[~np.isnan(scores).any(axis=1)]
    n, k = complete.shape
    if n < 2 or k < 2:
        return None
    grand = complete.mean()
    ss_rows = k * ((complete.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((complete.mean(axis=0) - grand) ** 2).sum()
    ss_total = ((complete - grand) ** 2).sum()
    ss_err = ss_total - ss_rows - ss_cols
    msr = ss_rows / (n - 1)
    msc = ss_cols / (k - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        icc2_1 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
        icc2_k = (msr - mse) / (msr + (msc - mse) / n)
        icc3_1 = (msr - mse) / (msr + (k - 1) * mse)
        icc3_k = (msr - mse) / msr
    return IccResult(float(icc2_1), float(icc2_k), float(icc3_1), float(icc3_k), n, k)


def krippendorff_alpha(scores: np.ndarray, level: str = "interval") -> float:
    """Krippendorff's alpha for a (units x raters) matrix with NaN for missing values.

    ``level``: "nominal", "ordinal" or "interval". Built from the coincidence matrix of the
    distinct values (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"); units with
    fewer than two values are not pairable and are ignored. NaN when there is no variation.
    """
    mask = ~np.isnan(scores)
    m_u = mask.sum(axis=1)
    pairable = m_u >= 2
    vals = scores[pairable]
    mk = mask[pairable]
    m_u = m_u[pairable]
    if vals.size == 0:
        return float("nan")
    values, inverse = np.unique(vals[mk], return_inverse=True)
    v_count = len(values)
    counts = np.zeros((vals.shape[0], v_count))
    rows = np.nonzero(mk)[0]
    np.add.at(counts, (rows, inverse), 1.0)
    weights = 1.0 / (m_u - 1)
    coinc = (counts * weights[:, None]).T @ counts
    coinc -= np.diag((counts * weights[:, None]).sum(axis=0))
    n_c = coinc.sum(axis=1)
    n_total = n_c.sum()
    if level == "nominal":
        delta2 = 1.0 - np.eye(v_count)
    elif level == "interval":
        delta2 = (values[:, None] - values[None, :]) ** 2
    elif level == "ordinal":
        cum = np.cumsum(n_c)
        lo = np.minimum.outer(np.arange(v_count), np.arange(v_count))
        hi = np.maximum.outer(np.arange(v_count), np.arange(v_count))
        between = cum[hi] - np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
        delta2 = (between - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2
    else:
        raise RatingError(f"unknown Krippendorff level {level!r}; use nominal, ordinal, interval")
    observed = (coinc * delta2).sum()
    expected = (np.outer(n_c, n_c) * delta2).sum() / (n_total - 1)
    if expected == 0:
        return float("nan")
    return float(1.0 - observed / expected)


# ----------------------------------------------------------------------------- everything


@dataclass(frozen=True)
class AggregationOptions:
    """The choices of :func:`aggregate` (``collect-ratings export`` and ``aggregate`` share them).

    ``ci``: ``t`` (Student, default) or ``normal`` (SUREAL's). ``screening``: MOS/std/CI use
    only raters BT.500 keeps (the screening itself always runs and is reported). ``zscore``:
    scores are z-scored per rater and mapped back onto the scale (grand mean + mean rater std *
    z) before the MOS. ``mle``: also fit the MLE subject model on the raw scores (noise variance
    floored at ``mle_min_variance``). ``mle_method``: ``reml`` (default; well-posed with few
    raters) or ``ml`` (SUREAL's estimator), see :func:`mle_subject_model`.
    ``bt500_skip_unanimous``: see :func:`bt500_screening` (default: exactly SUREAL).
    """

    ci: str = "t"
    screening: bool = False
    zscore: bool = False
    mle: bool = True
    mle_method: str = "reml"
    mle_min_variance: float = 0.01
    bt500_skip_unanimous: bool = False


def aggregate(
    matrix: ScoreMatrix, options: AggregationOptions | None = None, **changes: object
) -> Aggregation:
    """Run the full aggregation on one study with :class:`AggregationOptions`; ``changes``
    override single fields (``aggregate(matrix, ci="normal", mle=False)``).

    A subject-model fit that is not trustworthy (``converged`` False) raises an
    :class:`MleConvergenceWarning` naming the problems. Agreement (ICC, Krippendorff's alpha)
    is always on the raw scores.
    """
    opt = replace(options or AggregationOptions(), **changes)
    raw = matrix.scores
    bt = bt500_screening(raw, skip_unanimous=opt.bt500_skip_unanimous)
    kept = raw[:, ~bt.rejected]
    bt_mos = mos_statistics(kept, ci=opt.ci).mos
    work = raw
    if opt.zscore:
        work = zscore_to_scale(zscore_scores(raw), raw)
    if opt.screening:
        work = work[:, ~bt.rejected]
    stats_ = mos_statistics(work, ci=opt.ci)
    model = None
    if opt.mle:
        model = mle_subject_model(
            raw, matrix.content, method=opt.mle_method, min_variance=opt.mle_min_variance
        )
        if not model.converged:
            warnings.warn(
                f"MLE subject model ({opt.mle_method}) is not reliable, do not use mle_quality: "
                + "; ".join(model.problems),
                MleConvergenceWarning,
                stacklevel=2,
            )
    return Aggregation(
        matrix=matrix,
        stats=stats_,
        bt500=bt,
        bt500_mos=bt_mos,
        mle=model,
        icc=icc(raw),
        alpha_interval=krippendorff_alpha(raw, "interval"),
        alpha_ordinal=krippendorff_alpha(raw, "ordinal"),
        zscored=opt.zscore,
        screened=opt.screening,
    )
