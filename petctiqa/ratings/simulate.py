"""Simulated raters (for pilots, tests and power analysis -- never a substitute for a study).

Observer model, per image e of distortion cell c(e) and rater r:

    latent[e]   = mu[c(e)] + N(0, image_sd^2)            (content varies a little around the cell)
    score[e, r] = clip(round(latent[e] + bias[r] + N(0, inconsistency[r]^2)), 0, 4)
    bias[r] ~ N(0, bias_sd^2),  inconsistency[r] ~ Uniform(inconsistency_range)

``mu`` is calibrated so that the *expected quantised* score of each cell equals the published
radiologist MOS of PET-CT-IQA-DS (``PUBLISHED_CELL_MOS``; mean over the 20 published slices),
undoing the pull of rounding and clipping at the ends of the scale. Draws come from
``rng_for(seed, "simulate/...")`` keys, so a study is reproducible image by image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from petctiqa.seeding import rng_for

# (poisson_level, gaussian_level, jpeg_level) -> MOS (0..4), from the published table
# (shared/notes/pet-ct-iqa-ds-protocol.md: rows JPEG q100/q70/q40 x Gaussian 0/5/10, columns P0-P2).
_TABLE = {
    # jpeg level 0 (q100)
    (0, 0): (3.73, 2.98, 1.86),
    (0, 1): (3.02, 3.09, 1.94),
    (0, 2): (1.93, 1.95, 0.26),
    # jpeg level 1 (q70)
    (1, 0): (3.64, 3.69, 3.04),
    (1, 1): (3.69, 3.04, 1.08),
    (1, 2): (3.03, 1.06, 1.01),
    # jpeg level 2 (q40)
    (2, 0): (1.98, 1.91, 1.21),
    (2, 1): (1.98, 1.14, 0.46),
    (2, 2): (0.94, 0.33, 0.36),
}
PUBLISHED_CELL_MOS: dict[tuple[int, int, int], float] = {
    (p, g, j): row[p] for (j, g), row in _TABLE.items() for p in range(3)
}
"""Published MOS per (poisson, gaussian, jpeg) level; keys as in the dataset manifest."""


@dataclass(frozen=True)
class ObserverModel:
    """Parameters of the simulated radiologists (score units of the 0..4 scale)."""

    image_sd: float = 0.25
    """Spread of an image's latent quality around its cell (published: MOS std 0.2-0.4)."""
    bias_sd: float = 0.3
    inconsistency_low: float = 0.35
    inconsistency_high: float = 0.65
    scale_min: int = 0
    scale_max: int = 4

    @property
    def mean_noise_var(self) -> float:
        """E[bias^2 + inconsistency^2 + image_sd^2] for one score around the cell target."""
        lo, hi = self.inconsistency_low, self.inconsistency_high
        e_v2 = (hi**3 - lo**3) / (3 * (hi - lo)) if hi > lo else lo**2
        return self.image_sd**2 + self.bias_sd**2 + e_v2


@dataclass(frozen=True)
class SimulatedRater:
    rater: str
    bias: float
    inconsistency: float


def expected_quantised(mu: np.ndarray, sd: float, low: int = 0, high: int = 4) -> np.ndarray:
    """E[clip(round(X), low, high)] for X ~ N(mu, sd^2) (vectorised over ``mu``)."""
    mu = np.asarray(mu, dtype=float)
    thresholds = np.arange(low + 1, high + 1) - 0.5
    return low + stats.norm.sf((thresholds[None, :] - mu[..., None]) / sd).sum(axis=-1)


def expected_model_score(mu: np.ndarray, model: ObserverModel) -> np.ndarray:
    """Expected quantised score of an image with cell mean ``mu`` over the observer population:
    image offset and rater bias are normal, the inconsistency is averaged over its uniform range
    (32-point midpoint rule)."""
    lo, hi = model.inconsistency_low, model.inconsistency_high
    grid = lo + (np.arange(32) + 0.5) / 32 * (hi - lo)
    sds = np.sqrt(model.image_sd**2 + model.bias_sd**2 + grid**2)
    mu = np.asarray(mu, dtype=float)
    return np.mean(
        [expected_quantised(mu, sd, model.scale_min, model.scale_max) for sd in sds], axis=0
    )


def calibrate_latent(targets: np.ndarray, model: ObserverModel) -> np.ndarray:
    """Cell means whose expected quantised score (:func:`expected_model_score`) equals
    ``targets`` (vectorised bisection). Targets at the scale ends are clamped just inside."""
    low, high = model.scale_min, model.scale_max
    t = np.clip(np.asarray(targets, dtype=float), low + 1e-3, high - 1e-3)
    lo = np.full(t.shape, low - 10.0)
    hi = np.full(t.shape, high + 10.0)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        below = expected_model_score(mid, model) < t
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def draw_raters(names: Sequence[str], seed: int, model: ObserverModel) -> list[SimulatedRater]:
    """Bias and inconsistency of each simulated rater (one generator per rater name)."""
    out = []
    for name in names:
        rng = rng_for(seed, f"simulate/rater/{name}")
        bias = float(rng.normal(0.0, model.bias_sd))
        inc = float(rng.uniform(model.inconsistency_low, model.inconsistency_high))
        out.append(SimulatedRater(name, bias, inc))
    return out


def latent_quality(
    image_keys: Sequence[str],
    cells: Sequence[tuple[int, int, int]],
    seed: int,
    model: ObserverModel = ObserverModel(),
    cell_mos: dict[tuple[int, int, int], float] | None = None,
) -> np.ndarray:
    """Latent quality per image: calibrated cell mean + ``N(0, image_sd^2)`` drawn from
    ``rng_for(seed, "simulate/image/<key>")``."""
    table = PUBLISHED_CELL_MOS if cell_mos is None else cell_mos
    targets = np.array([table[tuple(int(v) for v in c)] for c in cells], dtype=float)
    unique_t, inverse = np.unique(targets, return_inverse=True)
    mu = calibrate_latent(unique_t, model)[inverse]
    offsets = np.array(
        [rng_for(seed, f"simulate/image/{key}").normal(0.0, model.image_sd) for key in image_keys]
    )
    return mu + offsets


def rate_latent(
    latent: np.ndarray,
    raters: Sequence[SimulatedRater],
    seed: int,
    model: ObserverModel = ObserverModel(),
) -> np.ndarray:
    """Integer scores (images x raters): ``clip(round(latent + bias + N(0, inc^2)))``; each
    rater's noise comes from ``rng_for(seed, "simulate/noise/<rater>")`` in image order."""
    scores = np.empty((len(latent), len(raters)), dtype=np.int64)
    for j, r in enumerate(raters):
        noise = rng_for(seed, f"simulate/noise/{r.rater}").normal(0.0, r.inconsistency, len(latent))
        raw = np.rint(latent + r.bias + noise)
        scores[:, j] = np.clip(raw, model.scale_min, model.scale_max).astype(np.int64)
    return scores


def simulate_scores(
    image_keys: Sequence[str],
    cells: Sequence[tuple[int, int, int]],
    raters: Sequence[SimulatedRater],
    seed: int,
    model: ObserverModel = ObserverModel(),
    cell_mos: dict[tuple[int, int, int], float] | None = None,
) -> np.ndarray:
    """Integer scores (images x raters) from the observer model (see the module docstring)."""
    return rate_latent(
        latent_quality(image_keys, cells, seed, model, cell_mos), raters, seed, model
    )


# ----------------------------------------------------------------------------- power


@dataclass(frozen=True)
class PowerRow:
    raters: int
    expected_ci_width_t: float
    """Expected full width of the Student-t 95% CI of one image's MOS (simulated, quantised)."""
    expected_ci_width_normal: float
    """The same with the normal approximation 1.96 * s / sqrt(n)."""
    analytic_ci_width_t: float
    """2 t(0.975, n-1) c4(n) sigma / sqrt(n) for continuous scores with spread ``sigma``."""
    mean_abs_mos_error: float
    """Mean |MOS - expected score| over the simulated images."""


def c4(n: np.ndarray | int) -> np.ndarray:
    """E[s] / sigma for the sample std of n normal values."""
    # lazy: scipy.special is slow to import (docs/architecture.md); only the power table needs
    # it, not the web app and CLI commands that import this module through the study
    from scipy.special import gammaln

    n = np.asarray(n, dtype=float)
    return np.sqrt(2.0 / (n - 1)) * np.exp(gammaln(n / 2) - gammaln((n - 1) / 2))


def power_table(
    rater_counts: Sequence[int] = tuple(range(3, 11)),
    seed: int = 0,
    model: ObserverModel = ObserverModel(),
    images_per_cell: int = 40,
    panels: int = 25,
) -> list[PowerRow]:
    """Expected 95% CI width of the MOS for each panel size, by simulation over all 27 cells.

    For each panel size n, ``panels`` independent panels of n simulated raters rate
    ``images_per_cell`` images of every cell; the CI widths are averaged over images and panels.
    """
    cells = sorted(PUBLISHED_CELL_MOS)
    keys = [f"{c}/{i}" for c in cells for i in range(images_per_cell)]
    cell_list = [c for c in cells for _ in range(images_per_cell)]
    targets = np.array([PUBLISHED_CELL_MOS[c] for c in cell_list])
    latent = latent_quality(keys, cell_list, seed, model)
    sigma = float(np.sqrt(model.mean_noise_var - model.image_sd**2))
    rows = []
    for n in rater_counts:
        if n < 2:
            raise ValueError("a CI needs at least 2 raters")
        widths_t, widths_n, errors = [], [], []
        tq = float(stats.t.ppf(0.975, n - 1))
        for panel in range(panels):
            names = [f"power{n}-{panel}-{k}" for k in range(n)]
            raters = draw_raters(names, seed, model)
            s = rate_latent(latent, raters, seed, model).astype(float)
            sd = s.std(axis=1, ddof=1)
            widths_t.append(2 * tq * sd / np.sqrt(n))
            widths_n.append(2 * 1.95996 * sd / np.sqrt(n))
            errors.append(np.abs(s.mean(axis=1) - targets))
        rows.append(
            PowerRow(
                raters=n,
                expected_ci_width_t=float(np.mean(widths_t)),
                expected_ci_width_normal=float(np.mean(widths_n)),
                analytic_ci_width_t=float(2 * tq * c4(n) * sigma / np.sqrt(n)),
                mean_abs_mos_error=float(np.mean(errors)),
            )
        )
    return rows
