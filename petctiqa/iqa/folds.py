"""K-fold cross-validation by patient: fold i trains on the other folds' patients (pretraining
on their references when a recipe asks for it) and tests on its own; ``folds.csv`` summarises the
last-epoch (unbiased) and best-epoch (test-selected, optimistic) figures."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from petctiqa.atomic import atomic_write_text
from petctiqa.iqa.data import IqaDataset, patient_folds
from petctiqa.iqa.device import is_main_process
from petctiqa.iqa.presets import train_with_recipe
from petctiqa.iqa.train import TrainResult, train
from petctiqa.iqa.train_setup import TrainOptions


@dataclass(frozen=True)
class FoldsResult:
    folds: tuple[TrainResult, ...]
    srocc_mean: float
    """Mean over folds of the best-epoch (test-selected, optimistic) SROCC."""
    srocc_std: float
    plcc_mean: float
    plcc_std: float
    last_srocc_mean: float = math.nan
    """Mean over folds of the last-epoch SROCC (unbiased)."""
    last_srocc_std: float = math.nan
    last_plcc_mean: float = math.nan
    last_plcc_std: float = math.nan


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.array(values, dtype=np.float64)
    return float(np.mean(array)), float(np.std(array, ddof=1)) if len(array) > 1 else 0.0


def train_folds(
    dataset: IqaDataset,
    out_dir: Path,
    folds: int,
    options: TrainOptions = TrainOptions(),
    pretrain_options=None,
    protocol: str | Path | None = None,
) -> FoldsResult:
    """K-fold cross-validation by patient; fold i is written to ``out_dir/fold_<i>``, the
    summary to ``out_dir/folds.csv`` (by rank 0 only under DDP): per fold the last epoch's
    test SROCC/PLCC (unbiased) and the best epoch's (chosen on the test fold: optimistic),
    then their mean and std over folds."""
    results = []
    for i, (train_groups, test_groups) in enumerate(
        patient_folds(dataset.groups, folds, options.seed), start=1
    ):
        fold_dir = Path(out_dir) / f"fold_{i}"
        fold_options = options
        if options.resume and not (fold_dir / "last.pt").is_file():
            fold_options = replace(options, resume=False)
        if pretrain_options is not None:
            # Each fold pretrains on its own training patients' references only.
            result = train_with_recipe(
                dataset,
                fold_dir,
                fold_options,
                pretrain_options,
                protocol,
                None,
                train_groups,
                test_groups,
            )
        else:
            result = train(dataset, fold_dir, fold_options, train_groups, test_groups)
        # Do not keep K trained models alive (GPU memory): each fold's is in its last.pt.
        results.append(replace(result, model=None))
    best_srocc = _mean_std([r.best_srocc for r in results])
    best_plcc = _mean_std([r.best_plcc for r in results])
    last_srocc = _mean_std([r.last_srocc for r in results])
    last_plcc = _mean_std([r.last_plcc for r in results])
    summary = FoldsResult(
        folds=tuple(results),
        srocc_mean=best_srocc[0],
        srocc_std=best_srocc[1],
        plcc_mean=best_plcc[0],
        plcc_std=best_plcc[1],
        last_srocc_mean=last_srocc[0],
        last_srocc_std=last_srocc[1],
        last_plcc_mean=last_plcc[0],
        last_plcc_std=last_plcc[1],
    )
    if is_main_process():
        lines = ["fold,last_epoch,last_srocc,last_plcc,best_epoch,best_srocc,best_plcc"]
        lines += [
            f"{i},{r.last_epoch},{r.last_srocc:.6f},{r.last_plcc:.6f},"
            f"{r.best_epoch},{r.best_srocc:.6f},{r.best_plcc:.6f}"
            for i, r in enumerate(results, start=1)
        ]
        for name, index in (("mean", 0), ("std", 1)):
            lines.append(
                f"{name},,{last_srocc[index]:.6f},{last_plcc[index]:.6f},"
                f",{best_srocc[index]:.6f},{best_plcc[index]:.6f}"
            )
        atomic_write_text(Path(out_dir) / "folds.csv", "\n".join(lines) + "\n")
    return summary
