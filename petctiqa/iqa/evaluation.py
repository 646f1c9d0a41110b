"""``petctiqa evaluate``: metrics with bootstrap CIs for a checkpoint and the baselines on the
same test images, printed like the paper's Table 1.

Test images: the checkpoint's stored test patients when the data holds any of them; otherwise
the data's own test split; otherwise every image (an external test set, for which the
training-fitted baselines are skipped). Training images for the baselines: the checkpoint's
training patients present in the data, else the data's training split.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from petctiqa.atomic import atomic_write_text
from petctiqa.errors import DatasetError
from petctiqa.iqa import baselines as bl
from petctiqa.iqa.data import IqaDataset, IqaSample, load_iqa_dataset
from petctiqa.iqa.handcrafted import fit_handcrafted
from petctiqa.iqa.metrics import MetricReport, evaluate_predictions, plcc, srocc
from petctiqa.iqa.score import Scorer


@dataclass(frozen=True)
class MethodResult:
    method: str
    predictions: np.ndarray
    report: MetricReport | None
    note: str = ""


@dataclass(frozen=True)
class Evaluation:
    test: tuple[IqaSample, ...]
    train: tuple[IqaSample, ...]
    methods: tuple[MethodResult, ...]


def choose_split(
    dataset: IqaDataset, train_groups: Sequence[str], test_groups: Sequence[str]
) -> tuple[list[IqaSample], list[IqaSample]]:
    """(train samples, test samples) for evaluation (see the module docstring)."""
    present = set(dataset.groups)
    if set(test_groups) & present:
        test = dataset.subset(test_groups)
        train = dataset.subset(set(train_groups) & present)
        return train, test
    test = [s for s in dataset.samples if s.split == "test"]
    if test:
        return [s for s in dataset.samples if s.split == "train"], test
    return [], list(dataset.samples)


def level_table_lopo(dataset: IqaDataset, n_boot: int = 0) -> list[tuple[str, float, float]]:
    """Leave-one-patient-out level-table baseline: [(held-out patient, SROCC, PLCC)]."""
    if any(s.levels is None for s in dataset.samples):
        raise DatasetError(
            f"{dataset.root}: the images have no distortion levels (a design that draws its "
            "parameters, or ratings without level columns), so there is no level table"
        )
    out = []
    for patient in dataset.groups:
        test = dataset.subset([patient])
        train = [s for s in dataset.samples if s.group != patient]
        pred = bl.level_table_predict(train, test)
        mos = np.array([s.mos for s in test])
        out.append((patient, srocc(pred, mos), plcc(pred, mos)))
    return out


def checkpoint_training_samples(payload: dict) -> list[IqaSample]:
    """The training images a checkpoint records (its dataset path and training groups), or
    [] when that dataset is no longer where it was."""
    root = payload.get("train_options", {}).get("dataset")
    if not root or not Path(root).exists():
        return []
    try:
        dataset = load_iqa_dataset(Path(root))
    except DatasetError:
        return []
    return dataset.subset(list(payload.get("train_groups", [])))


def evaluate(
    checkpoint: Path | None,
    dataset: IqaDataset | None,
    baselines: bool = False,
    device: str = "auto",
    batch_size: int = 16,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = False,
    test_dataset: IqaDataset | None = None,
) -> Evaluation:
    """Score the test images with the checkpoint (and baselines) and compute all metrics.

    With ``test_dataset`` every image of it is a test image; the training side for the
    baselines is ``dataset`` when given, else the training images the checkpoint records."""
    train_groups: list[str] = []
    test_groups: list[str] = []
    scorer = None
    if checkpoint is not None:
        scorer = Scorer(Path(checkpoint), device)
        payload = scorer.payload
        train_groups = list(payload.get("train_groups", []))
        test_groups = list(payload.get("test_groups", []))
    if test_dataset is not None:
        test = list(test_dataset.samples)
        if dataset is not None:
            train = list(dataset.samples)
        else:
            train = checkpoint_training_samples(scorer.payload) if scorer is not None else []
    elif dataset is not None:
        train, test = choose_split(dataset, train_groups, test_groups)
    else:
        raise DatasetError("evaluate: give the data to evaluate on")
    root = (test_dataset or dataset).root
    if len(test) < 3:
        raise DatasetError(f"{root}: only {len(test)} test images (need >= 3)")
    mos = np.array([s.mos for s in test])
    methods: list[MethodResult] = []

    def add(name: str, pred: np.ndarray, note: str = "") -> None:
        report = evaluate_predictions(pred, mos, n_boot=n_boot, seed=seed)
        methods.append(MethodResult(name, np.asarray(pred, dtype=np.float64), report, note))

    def skip(name: str, why: str) -> None:
        methods.append(MethodResult(name, np.full(len(test), np.nan), None, why))

    if scorer is not None:
        records = scorer.score([s.image for s in test], batch_size=batch_size, progress=progress)
        failed = [r for r in records if r.error]
        if failed:
            raise DatasetError(f"{failed[0].source}: {failed[0].error}")
        add(str(scorer.payload.get("architecture", "model")), np.array([r.score for r in records]))
    if baselines:
        if train and all(s.levels is not None for s in (*train, *test)):
            add("level table", bl.level_table_predict(train, test))
        elif train and all(s.parameters for s in (*train, *test)):  # e.g. a continuous design
            add("parameter regression (fit on train)", bl.parameter_regression_predict(train, test))
        else:
            skip("level table", "distortion levels or training images unknown")
        if len(train) >= 3:
            add("BRISQUE (SVR fit on train)", bl.fit_brisque(train).predict(test))
            add("hand-made features (GBR fit on train)", fit_handcrafted(train).predict(test))
        else:
            skip("BRISQUE (SVR fit on train)", "no training images")
        references = sorted({s.reference for s in train if s.reference is not None})
        if references:
            add("NIQE (fit on train refs)", bl.fit_niqe(references).predict(test))
        else:
            skip("NIQE (fit on train refs)", "no reference renders of training patients")
        if all(s.reference is not None for s in test):
            psnr, ssim = bl.full_reference_scores(test)
            add("PSNR (full-reference)", psnr)
            add("SSIM (full-reference)", ssim)
        else:
            skip("PSNR/SSIM (full-reference)", "no references for the test images")
    return Evaluation(tuple(test), tuple(train), tuple(methods))


def format_table(evaluation: Evaluation) -> str:
    """A Table-1-like text table: value [95% CI] per metric and method."""
    header = f"{'method':<28} {'SROCC':>22} {'PLCC':>22} {'PLCC(logistic)':>22} {'KRCC':>22} {'RMSE':>22}"
    lines = [
        f"test images: {len(evaluation.test)}  training images: {len(evaluation.train)}",
        header,
        "-" * len(header),
    ]
    for m in evaluation.methods:
        if m.report is None:
            lines.append(f"{m.method:<28} (skipped: {m.note})")
            continue
        cells = []
        for name in ("srocc", "plcc", "plcc_logistic", "krcc", "rmse"):
            v = getattr(m.report, name)
            cells.append(f"{v.value:7.4f} [{v.ci_low:6.3f},{v.ci_high:6.3f}]")
        lines.append(f"{m.method:<28} " + " ".join(f"{c:>22}" for c in cells))
    lines.append("RMSE is raw (on the MOS scale); for NIQE/PSNR/SSIM it is not meaningful.")
    return "\n".join(lines)


def write_table_csv(path: Path, evaluation: Evaluation) -> None:
    """One row per method: n and each metric with its CI bounds (atomic)."""
    rows = [
        {"method": m.method, **(m.report.as_row() if m.report else {}), "note": m.note}
        for m in evaluation.methods
    ]
    buffer = io.StringIO()
    pd.DataFrame(rows).to_csv(buffer, index=False)
    atomic_write_text(path, buffer.getvalue())
