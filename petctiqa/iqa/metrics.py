"""IQA agreement metrics: SROCC, PLCC (raw and after the 4-parameter logistic map), KRCC, RMSE,
with percentile bootstrap 95% confidence intervals.

Conventions: ``pred`` and ``mos`` are 1-D float arrays of the same length on the MOS scale.
Correlations are signed (a baseline whose score falls as quality rises, like NIQE, gives a
negative value); the paper prints |SROCC| / |PLCC|. RMSE is on the MOS scale, raw (no mapping).
The logistic PLCC fits ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`` (VQEG), once on the
full set; bootstrap resamples the fitted predictions (the fit is not redone per resample).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from petctiqa.seeding import rng_for

METRIC_NAMES = ("srocc", "plcc", "plcc_logistic", "krcc", "rmse")


@dataclass(frozen=True)
class MetricValue:
    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class MetricReport:
    n: int
    srocc: MetricValue
    plcc: MetricValue
    plcc_logistic: MetricValue
    krcc: MetricValue
    rmse: MetricValue

    def as_row(self) -> dict[str, float]:
        row: dict[str, float] = {"n": float(self.n)}
        for name in METRIC_NAMES:
            metric: MetricValue = getattr(self, name)
            row[name] = metric.value
            row[f"{name}_ci_low"] = metric.ci_low
            row[f"{name}_ci_high"] = metric.ci_high
        return row


def _check(pred: np.ndarray, mos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    mos = np.asarray(mos, dtype=np.float64).reshape(-1)
    if pred.shape != mos.shape:
        raise ValueError(f"pred and mos differ in length: {pred.size} vs {mos.size}")
    return pred, mos


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of (B, n) arrays (nan for a constant row)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    denom = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / denom


def srocc(pred: np.ndarray, mos: np.ndarray) -> float:
    pred, mos = _check(pred, mos)
    return float(_rowwise_pearson(stats.rankdata(pred), stats.rankdata(mos)))


def plcc(pred: np.ndarray, mos: np.ndarray) -> float:
    pred, mos = _check(pred, mos)
    return float(_rowwise_pearson(pred, mos))


def krcc(pred: np.ndarray, mos: np.ndarray) -> float:
    pred, mos = _check(pred, mos)
    return float(stats.kendalltau(pred, mos).statistic)


def rmse(pred: np.ndarray, mos: np.ndarray) -> float:
    pred, mos = _check(pred, mos)
    return float(np.sqrt(np.mean((pred - mos) ** 2)))


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    z = np.clip(-(x - b3) / max(abs(b4), 1e-12), -500, 500)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def fit_logistic4(pred: np.ndarray, mos: np.ndarray) -> np.ndarray:
    """Map predictions onto the MOS scale with the 4-parameter logistic (identity-like fallback
    to a linear fit when the optimiser does not converge)."""
    pred, mos = _check(pred, mos)
    spread = float(np.std(pred)) or 1.0
    sign = 1.0 if plcc(pred, mos) >= 0 else -1.0
    p0 = [float(mos.max()), float(mos.min()), float(np.mean(pred)), sign * spread]
    if sign < 0:
        p0[0], p0[1] = p0[1], p0[0]
        p0[3] = spread
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, pred, mos, p0=p0, maxfev=20000)
        fitted = logistic4(pred, *params)
        if np.all(np.isfinite(fitted)):
            return fitted
    except (RuntimeError, ValueError):
        pass
    slope, intercept = np.polyfit(pred, mos, 1)
    return slope * pred + intercept


def evaluate_predictions(
    pred: np.ndarray, mos: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> MetricReport:
    """All metrics with percentile bootstrap 95% CIs (resampling images with replacement,
    draws from ``rng_for(seed, "bootstrap")``)."""
    pred, mos = _check(pred, mos)
    n = pred.size
    if n < 3:
        raise ValueError(f"need at least 3 images for correlation metrics, got {n}")
    fitted = fit_logistic4(pred, mos)
    point = {
        "srocc": srocc(pred, mos),
        "plcc": plcc(pred, mos),
        "plcc_logistic": plcc(fitted, mos),
        "krcc": krcc(pred, mos),
        "rmse": rmse(pred, mos),
    }
    rng = rng_for(seed, "bootstrap")
    idx = rng.integers(0, n, size=(n_boot, n))
    p, m, f = pred[idx], mos[idx], fitted[idx]
    boot = {
        "srocc": _rowwise_pearson(stats.rankdata(p, axis=1), stats.rankdata(m, axis=1)),
        "plcc": _rowwise_pearson(p, m),
        "plcc_logistic": _rowwise_pearson(f, m),
        "krcc": np.array([stats.kendalltau(a, b).statistic for a, b in zip(p, m, strict=True)]),
        "rmse": np.sqrt(np.mean((p - m) ** 2, axis=1)),
    }
    values = {}
    for name in METRIC_NAMES:
        samples = boot[name][np.isfinite(boot[name])]
        low, high = np.percentile(samples, [2.5, 97.5]) if samples.size else (float("nan"),) * 2
        values[name] = MetricValue(point[name], float(low), float(high))
    return MetricReport(n=n, **values)
