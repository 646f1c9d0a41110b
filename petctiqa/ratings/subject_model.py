"""The MLE subject model of opinion scores (SUREAL's, Li & Bampis): score = quality(e) +
bias(s) + noise with variance inconsistency(s)^2 + ambiguity(content(e))^2.

``method="ml"`` is SUREAL's ``MaximumLikelihoodEstimationModel`` (the same damped Newton
updates, refresh rate 0.1, stop when ||delta quality|| < 1e-8, bias forced to zero mean),
safeguarded against steps that walk down the likelihood; ``method="reml"`` (the default of
:func:`petctiqa.ratings.aggregate.aggregate`) solves the restricted-likelihood equations
instead, which stay well-posed with 5 raters. Pure NumPy over ``scores[e, s]`` (NaN = not
rated); :mod:`petctiqa.ratings.aggregate` runs it with the other statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petctiqa.errors import RatingError


class MleConvergenceWarning(RuntimeWarning):
    """The MLE subject model did not converge or hit a bound (see ``MleResult.problems``)."""


@dataclass(frozen=True)
class MleResult:
    """SUREAL MLE subject model estimates (quality on the score scale)."""

    quality: np.ndarray
    quality_std: np.ndarray
    bias: np.ndarray
    bias_std: np.ndarray
    inconsistency: np.ndarray
    ambiguity: np.ndarray
    iterations: int
    converged: bool
    method: str = "ml"
    problems: tuple[str, ...] = ()
    """Why the fit is not trustworthy (empty when ``converged``)."""
    fallback_steps: int = 0
    """Updates where SUREAL's Newton step was replaced by a Fisher-scoring step (safeguard)."""


MLE_METHODS = ("ml", "reml")


def mle_subject_model(
    scores: np.ndarray,
    content: np.ndarray | None = None,
    *,
    method: str = "ml",
    max_iter: int = 10000,
    tol: float = 1e-8,
    refresh_rate: float = 0.1,
    force_zero_mean_bias: bool = True,
    min_variance: float = 0.0,
    max_std: float | None = None,
    variance_tol: float = 1e-6,
) -> MleResult:
    """Subject model X[e,s] ~ N(x[e] + b[s], v[s]^2 + a[c(e)]^2): quality x, rater bias b
    (forced to zero mean), rater inconsistency v, content ambiguity a.

    ``method="ml"`` (default) is SUREAL's ``MaximumLikelihoodEstimationModel`` (gradient method
    'simplified'): starting from x = MOS, b = 0, v = std of each rater's residuals, a = std of
    each content's residuals (ddof=0), each iteration updates b (weighted mean residual), v and
    a (one Newton step on the log-likelihood, clipped at 0), then x (weighted mean), each damped
    as ``new = 0.9 old + 0.1 step``; it stops when the L2 change of x is below ``tol``.
    Safeguard: SUREAL's Newton step on a std is not taken where it would *increase* the std in
    a region where the log-likelihood is convex in it (there Newton walks down the likelihood:
    with integer scores and 5 raters this made ambiguities grow 10 % per iteration to 1e40),
    nor where it is non-finite or beyond ``max_std`` (default: the range of the scores); one
    Fisher-scoring step on the variance, clipped to ``[0, max_std^2]``, is taken instead. The
    iterates on SUREAL's NFLX data are unchanged (``fallback_steps`` = 0).

    ``method="reml"`` (what :func:`aggregate` uses) treats x and b as fixed effects and solves
    the *restricted* likelihood equations of the variances, sum(r^2/var^2) = sum((1 - h)/var)
    with h the rating's weight share in its image's mean (the bias's ~1/E share is neglected),
    by undamped Fisher-scoring steps alternating with exact weighted means for b and x. Plain
    ML is unbounded: one rater's inconsistency and all ambiguities -> 0 make the quality copy
    that rater and the likelihood -> infinity; with 5 raters SUREAL's iteration walks there
    (and ML variances are ~(n-1)/n too small). REML's leverage term removes both.

    Only v[s]^2 + a[c]^2 enters the likelihood, so v^2 + k, a^2 - k fit equally well and the
    split is not identified. ``ml`` returns wherever SUREAL's iteration stops on that ridge.
    ``reml`` reports ``ambiguity`` as a content's extra noise over the clearest content
    (min = 0) and ``inconsistency`` as a rater's noise std on a content of average ambiguity
    (the fitted noise variance of a rating is v^2 + a^2 - mean(a^2), mean over the ratings).

    ``min_variance`` floors v^2 + a^2 in the weights (0 = SUREAL). Stds are
    1/sqrt(Fisher information). ``converged`` is True only when x changed by less than
    ``tol`` (L2) and every std by less than ``variance_tol`` in the last iteration, every
    estimate is finite, no std sits at ``max_std`` and no rating's variance is at the floor;
    otherwise ``problems`` says why.
    """
    # Long on purpose: one numerical recipe (set-up, fit, convergence report), as in SUREAL.
    if method not in MLE_METHODS:
        raise RatingError(f"unknown MLE method {method!r}; use one of {', '.join(MLE_METHODS)}")
    x_es = np.asarray(scores, dtype=float)
    e_count, s_count = x_es.shape
    mask = ~np.isnan(x_es)
    m = mask.astype(float)
    x0 = np.where(mask, x_es, 0.0)
    cid = np.zeros(e_count, dtype=np.int64) if content is None else np.asarray(content, np.int64)
    c_count = int(cid.max()) + 1 if e_count else 1
    if max_std is None:
        span = float(np.nanmax(x_es) - np.nanmin(x_es)) if mask.any() else 0.0
        max_std = span if span > 0 else 1.0
    upper = float(max_std)
    floor = max(min_variance, 1e-300)
    fit = _reml_fit if method == "reml" else _sureal_fit
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        x_e, b_s, v_s, a_c, itr, dq, dvar, fallback, x_e_std, b_s_std = fit(
            x0, m, cid, c_count, upper, floor, max_iter, tol, variance_tol, refresh_rate
        )
        total = (v_s**2)[None, :] + (a_c**2)[cid][:, None]
    problems = []
    if dq >= tol or dvar >= variance_tol:
        problems.append(
            f"not converged in {itr} iterations: quality still moved by {dq:.2g} "
            f"(tolerance {tol:g}), a std by {dvar:.2g} (tolerance {variance_tol:g})"
        )
    if not all(np.isfinite(arr).all() for arr in (x_e, x_e_std, b_s, b_s_std, v_s, a_c)):
        problems.append("non-finite estimates")
    at_v = int((v_s >= upper * (1 - 1e-9)).sum())
    at_a = int((a_c >= upper * (1 - 1e-9)).sum())
    if at_v or at_a:
        problems.append(
            f"{at_v} inconsistency(ies) and {at_a} ambiguity(ies) at the bound {upper:g} "
            "(the range of the scores)"
        )
    low = max(min_variance, 1e-12)
    floored = int((mask & (total <= low)).sum())
    if floored:
        problems.append(
            f"{floored} rating(s) have noise variance at the floor {low:g}: a rater's "
            "inconsistency and the content ambiguity both went to 0 (the likelihood is "
            "unbounded there; the quality copies that rater)"
            + ("; use method 'reml'" if method == "ml" else "")
        )
    if method == "reml" and a_c.size:
        per_content = np.bincount(cid, weights=m.sum(axis=1), minlength=c_count)
        excess = a_c**2 - (a_c**2).min()
        mean_excess = float((per_content * excess).sum() / max(per_content.sum(), 1.0))
        v_s = np.sqrt(v_s**2 + (a_c**2).min() + mean_excess)
        a_c = np.sqrt(excess)
    if force_zero_mean_bias:
        mean_b = b_s.mean()
        b_s = b_s - mean_b
        x_e = x_e + mean_b
    return MleResult(
        quality=x_e,
        quality_std=x_e_std,
        bias=b_s,
        bias_std=b_s_std,
        inconsistency=v_s,
        ambiguity=a_c,
        iterations=itr,
        converged=not problems,
        method=method,
        problems=tuple(problems),
        fallback_steps=int(fallback),
    )


def _sureal_fit(x0, m, cid, c_count, upper, tiny, max_iter, tol, variance_tol, refresh_rate):
    """SUREAL's damped Newton iteration with the safeguards of :func:`mle_subject_model`."""
    s_count = x0.shape[1]
    n_e = m.sum(axis=1)
    n_c = np.bincount(cid, weights=n_e, minlength=c_count)
    x_e = x0.sum(axis=1) / n_e
    resid = m * (x0 - x_e[:, None])
    v_s = np.minimum(np.sqrt((resid**2).sum(axis=0) / m.sum(axis=0)), upper)
    a_c = np.sqrt(np.bincount(cid, weights=(resid**2).sum(axis=1), minlength=c_count) / n_c)
    a_c = np.minimum(a_c, upper)
    b_s = np.zeros(s_count)
    keep = 1.0 - refresh_rate

    def step(p, num, den, grad_theta, info_theta):
        # SUREAL's damped Newton target unless it climbs a convex region (walks down the
        # likelihood) or leaves [0, upper]; then a Fisher-scoring target on the variance
        newton = p - num / den
        ok = ((den < 0) | (newton <= p)) & np.isfinite(newton) & (newton <= upper)
        theta = np.nan_to_num(p**2 + grad_theta / info_theta, nan=0.0, posinf=upper**2)
        target = np.where(ok, newton, np.sqrt(np.clip(theta, 0.0, upper**2)))
        new = np.clip(np.nan_to_num(keep * p + refresh_rate * target, nan=0.0), 0.0, upper)
        return new, int((~ok).sum())

    x_e_std = b_s_std = np.zeros(0)
    dq = dvar = np.inf
    fallback = 0
    itr = 0
    while itr < max_iter:
        x_prev, v_prev, a_prev = x_e, v_s, a_c
        # (12) bias
        a2 = (a_c**2)[cid][:, None]
        var = np.maximum(v_s[None, :] ** 2 + a2, tiny)
        w = m / var
        den = w.sum(axis=0)
        b_new = ((x0 - x_e[:, None]) * w).sum(axis=0) / den
        b_s = keep * b_s + refresh_rate * b_new
        b_s_std = 1.0 / np.sqrt(np.maximum(0.0, den))
        # (14) inconsistency
        r = x0 - x_e[:, None] - b_s[None, :]
        r2 = r**2
        v = v_s[None, :]
        v2 = v**2
        var = np.maximum(v2 + a2, tiny)
        num = (m * (-v / var + v * r2 / var**2)).sum(axis=0)
        poly = a2**2 - 3 * v2**2 - 2 * v2 * a2
        den = (m * ((v2 - a2) / var**2 + r2 * poly / var**4)).sum(axis=0)
        g_theta = (m * (r2 / var**2 - 1.0 / var)).sum(axis=0)
        i_theta = (m / var**2).sum(axis=0)
        v_s, n_fb = step(v_s, num, den, g_theta, i_theta)
        fallback += n_fb
        # (15) content ambiguity
        v2 = (v_s**2)[None, :]
        a1 = a_c[cid][:, None]
        var = np.maximum(v2 + a2, tiny)
        num_e = (m * (-a1 / var + a1 * r2 / var**2)).sum(axis=1)
        poly = v2**2 - 3 * a2**2 - 2 * v2 * a2
        den_e = (m * (-(v2 - a2) / var**2 + r2 * poly / var**4)).sum(axis=1)
        g_e = (m * (r2 / var**2 - 1.0 / var)).sum(axis=1)
        i_e = (m / var**2).sum(axis=1)
        a_c, n_fb = step(
            a_c,
            np.bincount(cid, weights=num_e, minlength=c_count),
            np.bincount(cid, weights=den_e, minlength=c_count),
            np.bincount(cid, weights=g_e, minlength=c_count),
            np.bincount(cid, weights=i_e, minlength=c_count),
        )
        fallback += n_fb
        # (11) quality
        var = np.maximum(v2 + (a_c**2)[cid][:, None], tiny)
        w = m / var
        den = w.sum(axis=1)
        x_new = ((x0 - b_s[None, :]) * w).sum(axis=1) / den
        x_e = keep * x_e + refresh_rate * x_new
        x_e_std = 1.0 / np.sqrt(np.maximum(0.0, den))
        itr += 1
        dq = float(np.linalg.norm(x_prev - x_e))
        dvar = float(max(np.abs(v_s - v_prev).max(initial=0), np.abs(a_c - a_prev).max(initial=0)))
        if dq < tol:
            break
    return x_e, b_s, v_s, a_c, itr, dq, dvar, fallback, x_e_std, b_s_std


def _reml_fit(x0, m, cid, c_count, upper, tiny, max_iter, tol, variance_tol, refresh_rate):
    """Restricted-likelihood fit (see :func:`mle_subject_model`); ``refresh_rate`` unused."""
    del refresh_rate
    n_e = m.sum(axis=1)
    x_e = x0.sum(axis=1) / n_e
    resid = m * (x0 - x_e[:, None])
    # start with all noise in the raters (each squared residual about the MOS has expectation
    # (1 - 1/n) var) and no ambiguity
    dof = (m * (1.0 - 1.0 / n_e[:, None])).sum(axis=0)
    th = np.clip((resid**2).sum(axis=0) / np.maximum(dof, 1e-12), 0.0, upper**2)
    ph = np.zeros(c_count)
    b_s = np.zeros(x0.shape[1])
    dq = dvar = np.inf
    itr = 0
    while itr < max_iter:
        x_prev, th_prev, ph_prev = x_e, th, ph
        var = np.maximum(th[None, :] + ph[cid][:, None], tiny)
        w = m / var
        # bias (exact given x), then quality (exact given b)
        b_s = ((x0 - x_e[:, None]) * w).sum(axis=0) / w.sum(axis=0)
        big_w = w.sum(axis=1)
        x_e = ((x0 - b_s[None, :]) * w).sum(axis=1) / big_w
        r2 = m * (x0 - x_e[:, None] - b_s[None, :]) ** 2
        # rater variances: one scoring step on sum(r2/var^2 - (1-h)/var) = 0
        lev = 1.0 - w / big_w[:, None]
        g = (m * (r2 / var**2 - lev / var)).sum(axis=0)
        info = (m * lev / var**2).sum(axis=0)
        th = np.clip(np.nan_to_num(th + g / info, nan=0.0, posinf=upper**2), 0.0, upper**2)
        # content variances, with the new rater variances
        var = np.maximum(th[None, :] + ph[cid][:, None], tiny)
        w = m / var
        lev = 1.0 - w / w.sum(axis=1)[:, None]
        g = np.bincount(cid, weights=(m * (r2 / var**2 - lev / var)).sum(axis=1), minlength=c_count)
        info = np.bincount(cid, weights=(m * lev / var**2).sum(axis=1), minlength=c_count)
        ph = np.clip(np.nan_to_num(ph + g / info, nan=0.0, posinf=upper**2), 0.0, upper**2)
        itr += 1
        dq = float(np.linalg.norm(x_e - x_prev))
        dvar = float(
            max(
                np.abs(np.sqrt(th) - np.sqrt(th_prev)).max(initial=0),
                np.abs(np.sqrt(ph) - np.sqrt(ph_prev)).max(initial=0),
            )
        )
        if dq < tol and dvar < variance_tol:
            break
    w = m / np.maximum(th[None, :] + ph[cid][:, None], tiny)
    x_std = 1.0 / np.sqrt(w.sum(axis=1))
    b_std = 1.0 / np.sqrt(w.sum(axis=0))
    return x_e, b_s, np.sqrt(th), np.sqrt(ph), itr, dq, dvar, 0, x_std, b_std
