"""What a training run writes besides checkpoints: metrics.csv, curves.png, scatter.png,
predictions.csv, and the correlation figures of one evaluation."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from petctiqa.atomic import atomic_write_bytes, atomic_write_text
from petctiqa.iqa.data import IqaSample
from petctiqa.iqa.metrics import krcc, plcc, rmse, srocc

METRICS_COLUMNS = (
    "epoch",
    "train_loss",
    "test_srocc",
    "test_plcc",
    "test_krcc",
    "test_rmse",
    "train_images_per_s",
    "epoch_seconds",
    "lr",
    "best",
    "simulated",
)
"""``best`` is 1 on the epoch ``best.pt`` holds (chosen by test SROCC); the last row is the
last epoch (``last.pt``). ``simulated`` is true when the ratings were simulated."""


def write_metrics_csv(
    path: Path, history: list[dict[str, float]], best_epoch: int = 0, simulated: bool = False
) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        values = {k: row.get(k, "") for k in METRICS_COLUMNS}
        values["best"] = int(int(row["epoch"]) == best_epoch)
        values["simulated"] = str(bool(simulated)).lower()
        writer.writerow(values)
    atomic_write_text(path, buffer.getvalue())


def png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plot_curves(path: Path, history: list[dict[str, float]]) -> None:
    """Loss and test SROCC/PLCC per epoch."""
    # lazy: matplotlib is a heavy import (docs/architecture.md), and importing this module
    # must not switch a caller's backend: Agg is chosen when a figure is drawn
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # lazy: as above, after Agg is chosen

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(9, 3.5))
    left, right = figure.subplots(1, 2)
    left.plot(epochs, [row["train_loss"] for row in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="Loss (0.5 MSE + 0.5 rank)")
    for key, label in (("test_srocc", "SROCC"), ("test_plcc", "PLCC")):
        right.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=label)
    right.set(xlabel="epoch", ylabel="correlation", title="Test split")
    right.legend()
    atomic_write_bytes(path, png_bytes(figure))


def plot_scatter(path: Path, pred: np.ndarray, mos: np.ndarray, title: str) -> None:
    """Predicted vs MOS on the test split (0..4 scale)."""
    import matplotlib  # lazy: as in plot_curves

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # lazy: as in plot_curves

    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.subplots()
    axes.scatter(mos, pred, s=12, alpha=0.7)
    axes.plot([0, 4], [0, 4], color="grey", linewidth=1)
    axes.set(xlabel="MOS", ylabel="predicted", title=title, xlim=(-0.2, 4.2), ylim=(-0.2, 4.2))
    atomic_write_bytes(path, png_bytes(figure))


def write_predictions(path: Path, samples: list[IqaSample], pred: np.ndarray) -> None:
    lines = ["image,group,mos,predicted"]
    lines += [
        f"{s.image},{s.group},{s.mos:.6g},{p:.6f}" for s, p in zip(samples, pred, strict=True)
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")


def correlations(pred: np.ndarray, mos: np.ndarray) -> dict[str, float]:
    if len(mos) < 3 or np.ptp(pred) == 0 or np.ptp(mos) == 0:
        return {
            "test_srocc": float("nan"),
            "test_plcc": float("nan"),
            "test_krcc": float("nan"),
            "test_rmse": rmse(pred, mos) if len(mos) else math.nan,
        }
    return {
        "test_srocc": srocc(pred, mos),
        "test_plcc": plcc(pred, mos),
        "test_krcc": krcc(pred, mos),
        "test_rmse": rmse(pred, mos),
    }
