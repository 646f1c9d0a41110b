"""Training loop for any registered IQA model: MSE + ranking loss, AMP on CUDA, atomic
per-epoch checkpoints with best-by-SROCC, resume, seeded batches, DDP under ``torchrun``,
metrics CSV and PNG plots, K-fold cross-validation by patient, and evaluation on another
source every epoch (``test_dataset``).

Batches: ``batch_size`` is the global batch. Each epoch's order is a permutation drawn from
``rng_for(seed, "msiqa/epoch/<n>")`` (the key predates the model registry and is kept so runs
stay reproducible), so it is the same after ``--resume`` and for any number of processes; under
DDP each rank takes an equal share of every global batch (the ranking loss is computed within
each rank's share). A last batch too small to give every rank two images is dropped. With
``crops`` preprocessing each image contributes one crop per epoch at a position drawn from
``rng_for(seed, "crop/<epoch>/<index>")``. Labels are min-max normalised over the training
images (stored in the checkpoint).

Learning rate: ``lr`` for the trunk, ``head_lr`` (default ``lr``) for the parameters under the
model entry's head prefixes, with an optional linear warm-up and cosine decay per step.

Two figures are reported per run: the LAST epoch's test metrics (no choice was made on the test
data: the unbiased figure) and the BEST epoch's (``best.pt``, chosen by test SROCC: optimistic,
since the test split picked it). Under DDP only rank 0 evaluates, writes files and prints; the
history and best epoch are broadcast so every rank returns the same :class:`TrainResult`.
"""

from __future__ import annotations

import math
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from petctiqa.errors import DatasetError, ModelError
from petctiqa.iqa.baselines import level_table_predict
from petctiqa.iqa.checkpoint import LabelScale, read_checkpoint, save_checkpoint
from petctiqa.iqa.data import (
    DataWarning,
    IqaDataset,
    IqaSample,
    check_disjoint,
    patient_split,
)
from petctiqa.iqa.device import (
    autocast_dtype,
    init_distributed,
    resolve_device,
    restore_rng_state,
    rng_state,
)
from petctiqa.iqa.inference import predict_files
from petctiqa.iqa.loss import msiqa_loss
from petctiqa.iqa.preprocess import Preprocessing, grid_crops, load_input, random_crop
from petctiqa.iqa.train_report import (
    correlations,
    plot_curves,
    plot_scatter,
    write_metrics_csv,
    write_predictions,
)
from petctiqa.iqa.train_setup import (
    TrainOptions,
    TrainSetup,
    build_setup,
    set_trunk_trainable,
)
from petctiqa.seeding import rng_for


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    best_epoch: int
    best_srocc: float
    """Test SROCC of the epoch chosen by test SROCC (``best.pt``): optimistic."""
    best_plcc: float
    last_checkpoint: Path
    best_checkpoint: Path
    history: tuple[dict[str, float], ...]
    last_epoch: int = 0
    last_srocc: float = math.nan
    """Test SROCC after the last epoch (``last.pt``): the unbiased figure."""
    last_plcc: float = math.nan
    simulated: bool = False
    model: Any = field(default=None, repr=False, compare=False)
    """The trained model (last epoch, unwrapped from DDP) in this process."""
    level_table_srocc: float = math.nan
    """Level-table baseline fitted on the training images, on the same test images (both
    sides must carry distortion levels; NaN otherwise)."""
    level_table_plcc: float = math.nan
    seconds: float = math.nan


# ------------------------------------------------------------------------------- batching


def epoch_batches(
    n: int, batch_size: int, epoch: int, seed: int, world: int = 1
) -> list[np.ndarray]:
    """Global batches (index arrays) for one epoch; the order depends only on (seed, epoch)."""
    order = rng_for(seed, f"msiqa/epoch/{epoch}").permutation(n)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if batches and len(batches[-1]) < 2 * world:
        batches.pop()
    return batches


def _load_batch(
    samples: list[IqaSample], indices: np.ndarray, prep: Preprocessing, pool, seed: int, epoch: int
) -> np.ndarray:
    def one(index: int) -> np.ndarray:
        array = load_input(samples[index].image, preprocessing=prep)
        return random_crop(array, prep, rng_for(seed, f"crop/{epoch}/{index}"))

    arrays = pool.map(one, indices) if pool else map(one, indices)
    return np.stack(list(arrays))


def predict(
    model,
    images: list[Path],
    device,
    batch_size: int = 32,
    amp_dtype=None,
    progress: bool = False,
    channels_last: bool = False,
    size: int = 224,
    preprocessing: Preprocessing | None = None,
) -> np.ndarray:
    """Model outputs (normalised scale, float64) for image files, batched, in eval mode;
    crops preprocessing averages the crop grid (:mod:`petctiqa.iqa.inference`)."""
    prep = preprocessing if preprocessing is not None else Preprocessing(size=size)
    return predict_files(
        model, images, prep, device, batch_size, amp_dtype, channels_last, progress
    )


# ---------------------------------------------------------------------------------- setup


def _check_simulated(dataset: IqaDataset, options: TrainOptions) -> None:
    if not dataset.simulated:
        return
    if not options.allow_simulated:
        raise DatasetError(
            f"{dataset.root}: the ratings are SIMULATED (collect-ratings simulate), not from "
            "a reader study; refusing to train on them. Set allow_simulated for a pilot "
            "run (the checkpoint and metrics.csv are then marked simulated)",
            setting="allow_simulated",
        )
    warnings.warn(
        DataWarning(
            f"{dataset.root}: training on SIMULATED ratings (allow_simulated is set): the model "
            "and its metrics say nothing about real readers; outputs are marked simulated",
            setting="allow_simulated",
        ),
        stacklevel=3,
    )


# ---------------------------------------------------------------------------------- train


@dataclass(frozen=True)
class _Sides:
    train: list[IqaSample]
    test: list[IqaSample]
    train_groups: list[str]
    test_groups: list[str]
    test_source: str | None
    """The other source's path when testing on ``test_dataset``."""


def _sides(dataset, options, resume_state, train_groups, test_groups, test_dataset) -> _Sides:
    if test_dataset is not None:
        overlap = sorted(set(dataset.groups) & set(test_dataset.groups))
        if overlap:
            warnings.warn(
                f"{test_dataset.root} shares patient/group names with {dataset.root} "
                f"({', '.join(overlap[:5])}): if they are the same patients the test is not on "
                "unseen patients",
                DataWarning,
                stacklevel=3,
            )
        return _Sides(
            list(dataset.samples),
            list(test_dataset.samples),
            list(dataset.groups),
            list(test_dataset.groups),
            str(test_dataset.root),
        )
    if resume_state is not None:
        train_groups = list(resume_state["train_groups"])
        test_groups = list(resume_state["test_groups"])
    elif train_groups is None:
        train_groups, test_groups = patient_split(dataset, options.test_fraction, options.seed)
    test_groups = list(test_groups or [])
    check_disjoint(train_groups, test_groups)
    return _Sides(
        dataset.subset(train_groups),
        dataset.subset(test_groups),
        list(train_groups),
        test_groups,
        None,
    )


def _label_scale(samples: list[IqaSample], resume_state, root) -> LabelScale:
    if resume_state is not None:
        return LabelScale(**{k: float(v) for k, v in resume_state["label_scale"].items()})
    mos = np.array([s.mos for s in samples])
    if np.ptp(mos) == 0:
        raise DatasetError(f"{root}: all training MOS values are equal ({mos[0]})")
    return LabelScale(float(mos.min()), float(mos.max()))


def level_table_figures(train: list[IqaSample], test: list[IqaSample]) -> tuple[float, float]:
    """SROCC/PLCC of the level-table baseline (cell means of the training images) on ``test``;
    NaN when either side lacks distortion levels or a test cell is missing from training."""
    if not test or any(s.levels is None for s in train + test):
        return math.nan, math.nan
    try:
        pred = level_table_predict(train, test)
    except (DatasetError, KeyError, ValueError):
        return math.nan, math.nan
    figures = correlations(pred, np.array([s.mos for s in test]))
    return figures["test_srocc"], figures["test_plcc"]


def _base_payload(setup: TrainSetup, scale, sides: _Sides, simulated, dataset, options, render):
    return {
        "model_name": setup.entry.name,
        "config": setup.config.to_dict(),
        "label_scale": {"low": scale.low, "high": scale.high},
        "preprocessing": setup.prep.to_dict(),
        "render_protocol": render,
        "simulated": simulated,
        "train_groups": sides.train_groups,
        "test_groups": sides.test_groups,
        "test_data": sides.test_source,
        "train_options": {
            "model_name": setup.entry.name,
            "epochs": options.epochs,
            "batch_size": options.batch_size,
            "lr": options.lr,
            "head_lr": options.head_lr,
            "weight_decay": options.weight_decay,
            "warmup_epochs": options.warmup_epochs,
            "schedule": options.schedule,
            "seed": options.seed,
            "amp": options.amp,
            "pretrained": bool(setup.pretrained_weights),
            "pretrained_weights": setup.pretrained_weights,
            "init": setup.init_info,
            "dataset": str(dataset.root),
            "layout": dataset.layout,
            "simulated": simulated,
        },
    }


def _train_epoch(net, setup, sides, targets, options, dist_info, device, amp_dtype, pool, epoch):
    """One pass over the training images; returns the row of training figures."""
    net.train()
    frozen = epoch <= options.head_only_epochs
    set_trunk_trainable(setup.model, setup.entry, not frozen)
    batches = epoch_batches(
        len(sides.train), options.batch_size, epoch, options.seed, dist_info.world
    )
    started = time.perf_counter()
    losses: list[float] = []
    images_done = 0
    bar = tqdm(
        batches,
        desc=f"epoch {epoch}/{options.epochs}",
        unit="batch",
        disable=not (options.progress and dist_info.main),
    )
    for batch in bar:
        mine = np.array_split(batch, dist_info.world)[dist_info.rank]
        x = torch.from_numpy(_load_batch(sides.train, mine, setup.prep, pool, options.seed, epoch))
        x = x.to(device, non_blocking=True)
        if options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(targets[mine].astype(np.float32)).to(device)
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            pred = net(x)
        loss = msiqa_loss(pred, y)
        setup.optimizer.zero_grad(set_to_none=True)
        setup.scaler.scale(loss).backward()
        setup.scaler.step(setup.optimizer)
        setup.scaler.update()
        setup.scheduler.step()
        losses.append(float(loss.detach()))
        images_done += len(batch)
        rate = images_done / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", img_s=f"{rate:.1f}")
    seconds = time.perf_counter() - started
    return {
        "epoch": epoch,
        "train_loss": float(np.mean(losses)) if losses else math.nan,
        "train_images_per_s": images_done / max(seconds, 1e-9),
        "epoch_seconds": seconds,
        "lr": float(setup.optimizer.param_groups[0]["lr"]),
    }


def _evaluate_test(setup, sides, scale, options, device, amp_dtype) -> np.ndarray:
    raw = predict_files(
        setup.model,
        [s.image for s in sides.test],
        setup.prep,
        device,
        options.eval_batch_size,
        amp_dtype,
        options.channels_last,
        progress=options.progress,
    )
    return scale.denormalise(raw)


def _write_outputs(
    out_dir, setup, sides, payload, best, improved, row, pred_mos, history, simulated
):
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    save_checkpoint(last_path, payload)
    if improved or not best_path.is_file():
        # best.pt is for scoring: no optimizer state (a third of last.pt's size).
        save_checkpoint(best_path, {**payload, "optimizer": {}, "scaler": {}, "schedule": {}})
        if sides.test:
            mos = np.array([s.mos for s in sides.test])
            title = f"epoch {row['epoch']}: SROCC {row['test_srocc']:.3f}"
            plot_scatter(out_dir / "scatter.png", pred_mos, mos, title)
            write_predictions(out_dir / "predictions.csv", sides.test, pred_mos)
    write_metrics_csv(out_dir / "metrics.csv", history, int(best["epoch"]), simulated)
    plot_curves(out_dir / "curves.png", history)


def _fit_head(setup: TrainSetup, samples: list[IqaSample], targets: np.ndarray, device) -> None:
    """Closed-form fit of a model's quality head on the training images' evaluation inputs
    (every rank computes the same fit, so DDP replicas start equal)."""
    if device.type != "cpu":
        setup.model.cpu()
    stacks = (
        grid_crops(load_input(s.image, preprocessing=setup.prep), setup.prep) for s in samples
    )
    setup.model.fit_quality_head(stacks, torch.from_numpy(targets.astype(np.float32)))
    setup.model.to(device)


def _restore(setup: TrainSetup, resume_state, dist_info):
    setup.model.load_state_dict(resume_state["model"])
    try:
        setup.optimizer.load_state_dict(resume_state["optimizer"])
    except ValueError as exc:
        raise ModelError(
            f"resume: the checkpoint's optimiser state does not fit these options ({exc})",
            setting="resume",
        ) from None
    if resume_state.get("scaler"):
        setup.scaler.load_state_dict(resume_state["scaler"])
    if resume_state.get("schedule"):
        setup.scheduler.load_state_dict(resume_state["schedule"])
    saved_rng = resume_state["rng"]
    per_rank = resume_state.get("rng_ranks")
    if per_rank and len(per_rank) == dist_info.world:
        saved_rng = per_rank[dist_info.rank]
    restore_rng_state(saved_rng)


def train(
    dataset: IqaDataset,
    out_dir: Path,
    options: TrainOptions = TrainOptions(),
    train_groups: list[str] | None = None,
    test_groups: list[str] | None = None,
    test_dataset: IqaDataset | None = None,
) -> TrainResult:
    """Train ``options.model_name`` on ``dataset``; write checkpoints, metrics and plots.

    Without explicit groups the split is :func:`patient_split` (the data's own split or a
    seeded 80/20 patient split). With ``test_dataset`` every image of ``dataset`` trains and
    every image of ``test_dataset`` is evaluated after each epoch. ``options.resume``
    continues from ``out_dir/last.pt``. Simulated ratings are refused unless
    ``options.allow_simulated``. Reason for the length: the epoch loop keeps the DDP
    synchronisation points (gather, barrier, broadcast) visible in one place.
    """
    out_dir = Path(out_dir)
    _check_simulated(dataset, options)
    run_started = time.perf_counter()
    dist_info = init_distributed(options.device)
    device = resolve_device(options.device)
    if device.type == "cuda" and dist_info.world > 1:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    amp_dtype = autocast_dtype(device, options.amp)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    resume_state: dict[str, Any] | None = None
    if options.resume:
        if not last_path.is_file():
            raise ModelError(f"{last_path} not found: nothing to resume from", setting="resume")
        resume_state = read_checkpoint(last_path)
    sides = _sides(dataset, options, resume_state, train_groups, test_groups, test_dataset)
    if len(sides.train) < 2 * dist_info.world:
        raise DatasetError(f"{dataset.root}: only {len(sides.train)} training images")
    scale = _label_scale(sides.train, resume_state, dataset.root)
    targets = scale.normalise(np.array([s.mos for s in sides.train], dtype=np.float64))
    simulated = dataset.simulated or bool(resume_state and resume_state.get("simulated"))
    steps = len(
        epoch_batches(len(sides.train), options.batch_size, 1, options.seed, dist_info.world)
    )
    setup = build_setup(options, resume_state, device, amp_dtype, steps)
    render = dataset.render_protocol
    history: list[dict[str, float]] = []
    best = {"epoch": 0, "srocc": -math.inf, "plcc": math.nan}
    start_epoch = 1
    if resume_state is not None:
        render = resume_state.get("render_protocol", render)
        _restore(setup, resume_state, dist_info)
        history = [dict(row) for row in resume_state.get("history", [])]
        best = dict(resume_state.get("best", best))
        start_epoch = int(resume_state["epoch"]) + 1
    if resume_state is None and options.fit_head and hasattr(setup.model, "fit_quality_head"):
        _fit_head(setup, sides.train, targets, device)
    net = setup.model
    if dist_info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            setup.model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=getattr(setup.config, "reference_weighting", False),
        )
    base = _base_payload(setup, scale, sides, simulated, dataset, options, render)
    pool = ThreadPoolExecutor(options.workers) if options.workers > 0 else None
    spent = 0.0
    try:
        for epoch in range(start_epoch, options.epochs + 1):
            row = _train_epoch(
                net, setup, sides, targets, options, dist_info, device, amp_dtype, pool, epoch
            )
            rng = rng_state()
            rng_ranks = None
            if dist_info.world > 1:
                rng_ranks = [None] * dist_info.world
                torch.distributed.all_gather_object(rng_ranks, rng)
            if dist_info.main:
                pred_mos = np.array([])
                if sides.test:
                    pred_mos = _evaluate_test(setup, sides, scale, options, device, amp_dtype)
                    row.update(correlations(pred_mos, np.array([s.mos for s in sides.test])))
                history.append(row)
                # Best by test SROCC; without a test split, by lowest training loss.
                key = row.get("test_srocc", math.nan) if sides.test else -row["train_loss"]
                improved = not math.isnan(key) and key > best["srocc"]
                if improved:
                    best = {"epoch": epoch, "srocc": key, "plcc": row.get("test_plcc", math.nan)}
                payload = {
                    **base,
                    "model": setup.model.state_dict(),
                    "optimizer": setup.optimizer.state_dict(),
                    "scaler": setup.scaler.state_dict() if setup.scaler.is_enabled() else {},
                    "schedule": setup.scheduler.state_dict(),
                    "epoch": epoch,
                    "history": history,
                    "best": best,
                    "rng": rng,
                }
                if rng_ranks is not None:
                    payload["rng_ranks"] = rng_ranks
                _write_outputs(
                    out_dir,
                    setup,
                    sides,
                    payload,
                    best,
                    improved,
                    row,
                    pred_mos,
                    history,
                    simulated,
                )
            if dist_info.world > 1:
                torch.distributed.barrier()
            spent += row["epoch_seconds"]
            if options.max_seconds is not None and _budget_spent(spent, options, dist_info):
                break
    finally:
        if pool is not None:
            pool.shutdown()
    if dist_info.world > 1:
        # Only rank 0 evaluated: give every rank its history and best epoch.
        shared = [history, best]
        torch.distributed.broadcast_object_list(shared, src=0)
        history, best = shared
    last = history[-1] if history else {}
    table = level_table_figures(sides.train, sides.test)
    return TrainResult(
        out_dir=out_dir,
        best_epoch=int(best["epoch"]),
        best_srocc=float(best["srocc"]) if sides.test else math.nan,
        best_plcc=float(best["plcc"]),
        last_checkpoint=last_path,
        best_checkpoint=best_path,
        history=tuple(history),
        last_epoch=int(last.get("epoch", 0)),
        last_srocc=float(last.get("test_srocc", math.nan)),
        last_plcc=float(last.get("test_plcc", math.nan)),
        simulated=simulated,
        model=setup.model,
        level_table_srocc=table[0],
        level_table_plcc=table[1],
        seconds=time.perf_counter() - run_started,
    )


def _budget_spent(spent: float, options: TrainOptions, dist_info) -> bool:
    """Whether the time budget is used up; under DDP rank 0 decides for every rank."""
    decision = [spent >= options.max_seconds]
    if dist_info.world > 1:
        torch.distributed.broadcast_object_list(decision, src=0)
    return bool(decision[0])
