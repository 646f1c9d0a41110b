"""The agreement figure of an aggregation (``agreement.png``): each rater against the others'
MOS, and the MLE subject model's rater bias and inconsistency."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from petctiqa.atomic import atomic_write_bytes
from petctiqa.ratings.aggregate import Aggregation

SIMULATED_FIGURE_TITLE = "SIMULATED ratings (simulated raters, not a reader study)"


def write_agreement_figure(result: Aggregation, path: Path, simulated: bool = False) -> None:
    """PNG: each rater's scores against the MOS of the others, plus MLE bias/inconsistency.

    ``simulated``: the figure gets a red title :data:`SIMULATED_FIGURE_TITLE` (also stored as
    the PNG's Title text chunk), so a simulated study cannot be mistaken for a real one."""
    # lazy: matplotlib is a heavy import (docs/architecture.md): only the exports that draw
    # the figure pay for it
    import matplotlib

    matplotlib.use("Agg")
    # lazy: as above, and pyplot only after the Agg backend is chosen (no display needed)
    import matplotlib.pyplot as plt

    m = result.matrix
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    x = m.scores
    for s, name in enumerate(m.raters[:12]):
        others = np.nanmean(np.delete(x, s, axis=1), axis=1) if x.shape[1] > 1 else x[:, s]
        ok = ~np.isnan(x[:, s])
        jitter = (np.arange(ok.sum()) % 7 - 3) * 0.02
        axes[0].scatter(others[ok], x[ok, s] + jitter, s=6, alpha=0.4, label=name)
    axes[0].set_xlabel("MOS of the other raters")
    axes[0].set_ylabel("rater score")
    axes[0].set_title(
        "Agreement (ICC(2,1) = %s)" % ("n/a" if result.icc is None else f"{result.icc.icc2_1:.3f}")
    )
    if len(m.raters) <= 12:
        axes[0].legend(fontsize=7, markerscale=2)
    if result.mle is not None:
        axes[1].errorbar(
            result.mle.bias, np.arange(len(m.raters)), xerr=1.96 * result.mle.bias_std, fmt="o"
        )
        axes[1].scatter(result.mle.inconsistency, np.arange(len(m.raters)), marker="x", color="C3")
        axes[1].set_yticks(np.arange(len(m.raters)), list(m.raters), fontsize=7)
        axes[1].axvline(0, color="grey", lw=0.5)
        axes[1].set_xlabel("MLE bias (o, 95% CI) and inconsistency (x), score units")
    if result.mle is not None and not result.mle.converged:
        axes[1].set_title("MLE NOT converged: do not use", color="C3", fontsize=9)
    title = "Rater agreement"
    if simulated:
        title = SIMULATED_FIGURE_TITLE
        fig.suptitle(title, color="red", fontsize=13, fontweight="bold")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Title": title})
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
