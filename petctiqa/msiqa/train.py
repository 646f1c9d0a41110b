"""Training loop for MS-IQA: Adam, MSE + ranking loss, AMP on CUDA, atomic per-epoch
checkpoints with best-by-SROCC, resume, seeded batches, DDP under ``torchrun``, metrics CSV
and PNG plots, and K-fold cross-validation by patient.

Batches: ``batch_size`` is the global batch. Each epoch's order is a permutation drawn from
``rng_for(seed, "msiqa/epoch/<n>")``, so it is the same after ``--resume`` and for any number of
processes; under DDP each rank takes an equal share of every global batch (the ranking loss is
computed within each rank's share). A last batch too small to give every rank two images is
dropped. Labels are min-max normalised over the training split (stored in the checkpoint).

Two figures are reported per run: the LAST epoch's test metrics (no choice was made on the test
data: the unbiased figure) and the BEST epoch's (``best.pt``, chosen by test SROCC: optimistic,
since the test split picked it). Under DDP only rank 0 evaluates, writes files and prints; the
history and best epoch are broadcast so every rank returns the same :class:`TrainResult`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from petctiqa.atomic import atomic_write_bytes, atomic_write_text
from petctiqa.errors import DatasetError, ModelError
from petctiqa.msiqa.checkpoint import LabelScale, read_checkpoint, save_checkpoint
from petctiqa.msiqa.data import (
    DataWarning,
    IqaDataset,
    IqaSample,
    Preprocessing,
    check_disjoint,
    patient_folds,
    patient_split,
)
from petctiqa.msiqa.model import MsIqaConfig
from petctiqa.seeding import derive_seed, rng_for

METRICS_COLUMNS = (
    "epoch",
    "train_loss",
    "test_srocc",
    "test_plcc",
    "test_krcc",
    "test_rmse",
    "train_images_per_s",
    "epoch_seconds",
    "best",
    "simulated",
)
"""``best`` is 1 on the epoch ``best.pt`` holds (chosen by test SROCC); the last row is the
last epoch (``last.pt``). ``simulated`` is true when the ratings were simulated."""


@dataclass(frozen=True)
class TrainOptions:
    """Training settings; defaults are the paper's (Adam, lr 1e-5, batch 16, 224 x 224)."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-5
    seed: int = 0
    device: str = "auto"
    """"auto" (CUDA when available), "cpu" or "cuda"."""
    amp: str = "auto"
    """"auto" (bf16 on CUDA when supported, else fp16; off on CPU), "bf16", "fp16" or "off"."""
    channels_last: bool = False
    workers: int = 0
    test_fraction: float = 0.2
    pretrained: bool = False
    """ImageNet weights for every trunk (explicit files or the offline caches)."""
    resnet_weights: Path | None = None
    """A ResNet-50 weight file; implies pretraining for that trunk even without ``pretrained``."""
    swin_weights: Path | None = None
    """A Swin-T weight file; implies pretraining for that trunk even without ``pretrained``."""
    allow_simulated: bool = False
    """Train on simulated ratings (refused otherwise); the outputs are then marked simulated."""
    resume: bool = False
    progress: bool = True
    eval_batch_size: int = 32
    model: MsIqaConfig = field(default_factory=MsIqaConfig)


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


# ------------------------------------------------------------------------------ environment


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise ModelError(f"--device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def autocast_dtype(device, amp: str):
    """The autocast dtype for ``amp`` on ``device``, or None for full precision."""
    import torch

    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp in ("bf16", "fp16"):
        return torch.bfloat16 if amp == "bf16" else torch.float16
    raise ModelError(f"amp {amp!r}: use auto, bf16, fp16 or off")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """True on rank 0 of a torchrun job (or when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def rng_state() -> dict[str, Any]:
    """This process's torch RNG state: CPU, plus every CUDA device's when CUDA is in use."""
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`rng_state` (CUDA states only where CUDA is available here)."""
    import torch

    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        for index, device_state in enumerate(list(cuda)[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, index)


def init_distributed(device_name: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        use_cuda = device_name != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


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
    samples: list[IqaSample], indices: np.ndarray, prep: Preprocessing, pool
) -> np.ndarray:
    from petctiqa.msiqa.data import load_input

    paths = [samples[i].image for i in indices]
    arrays = (
        pool.map(lambda p: load_input(p, preprocessing=prep), paths)
        if pool
        else map(lambda p: load_input(p, preprocessing=prep), paths)
    )
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
    """Model outputs (normalised scale, float64) for image files, batched, in eval mode."""
    from tqdm import tqdm

    from petctiqa.msiqa.data import load_input

    prep = preprocessing if preprocessing is not None else Preprocessing(size=size)
    model.eval()
    out = np.empty(len(images), dtype=np.float64)
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="predict", unit="batch", disable=not progress, leave=False):
        chunk = images[start : start + batch_size]
        batch = np.stack([load_input(p, preprocessing=prep) for p in chunk])
        out[start : start + len(batch)] = predict_arrays(
            model, batch, device, amp_dtype, channels_last
        )
    return out


def predict_arrays(
    model, batch: np.ndarray, device, amp_dtype=None, channels_last=False
) -> np.ndarray:
    """Model outputs for a (B, 3, S, S) float32 array (normalised scale, float64)."""
    import torch

    x = torch.from_numpy(batch).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with (
        torch.inference_mode(),
        torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ),
    ):
        return model(x).float().cpu().numpy().astype(np.float64)


# --------------------------------------------------------------------------------- output


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


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plot_curves(path: Path, history: list[dict[str, float]]) -> None:
    """Loss and test SROCC/PLCC per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(9, 3.5))
    left, right = figure.subplots(1, 2)
    left.plot(epochs, [row["train_loss"] for row in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="Loss (0.5 MSE + 0.5 rank)")
    for key, label in (("test_srocc", "SROCC"), ("test_plcc", "PLCC")):
        right.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=label)
    right.set(xlabel="epoch", ylabel="correlation", title="Test split")
    right.legend()
    atomic_write_bytes(path, _png(figure))


def plot_scatter(path: Path, pred: np.ndarray, mos: np.ndarray, title: str) -> None:
    """Predicted vs MOS on the test split (0..4 scale)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.subplots()
    axes.scatter(mos, pred, s=12, alpha=0.7)
    axes.plot([0, 4], [0, 4], color="grey", linewidth=1)
    axes.set(xlabel="MOS", ylabel="predicted", title=title, xlim=(-0.2, 4.2), ylim=(-0.2, 4.2))
    atomic_write_bytes(path, _png(figure))


def write_predictions(path: Path, samples: list[IqaSample], pred: np.ndarray) -> None:
    lines = ["image,group,mos,predicted"]
    lines += [
        f"{s.image},{s.group},{s.mos:.6g},{p:.6f}" for s, p in zip(samples, pred, strict=True)
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------- train


def _correlations(pred: np.ndarray, mos: np.ndarray) -> dict[str, float]:
    from petctiqa.msiqa.metrics import krcc, plcc, rmse, srocc

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


def train(
    dataset: IqaDataset,
    out_dir: Path,
    options: TrainOptions = TrainOptions(),
    train_groups: list[str] | None = None,
    test_groups: list[str] | None = None,
) -> TrainResult:
    """Train MS-IQA on ``dataset`` and write checkpoints, metrics and plots to ``out_dir``.

    Without explicit groups the split is :func:`patient_split` (the data's own split or a
    seeded 80/20 patient split). ``options.resume`` continues from ``out_dir/last.pt``.
    Simulated ratings are refused unless ``options.allow_simulated``.
    """
    import torch
    from tqdm import tqdm

    from petctiqa.msiqa.loss import msiqa_loss
    from petctiqa.msiqa.model import MsIqa

    out_dir = Path(out_dir)
    if dataset.simulated:
        if not options.allow_simulated:
            raise DatasetError(
                f"{dataset.root}: the ratings are SIMULATED (collect-ratings simulate), not from "
                "a reader study; refusing to train on them. Pass --allow-simulated for a pilot "
                "run (the checkpoint and metrics.csv are then marked simulated)"
            )
        warnings.warn(
            f"{dataset.root}: training on SIMULATED ratings (--allow-simulated): the model and "
            "its metrics say nothing about real readers; outputs are marked simulated",
            DataWarning,
            stacklevel=2,
        )
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
            raise ModelError(f"--resume: {last_path} not found")
        resume_state = read_checkpoint(last_path)
        train_groups = list(resume_state["train_groups"])
        test_groups = list(resume_state["test_groups"])
        config = MsIqaConfig.from_dict(dict(resume_state["config"]))
    else:
        config = options.model
        if train_groups is None:
            train_groups, test_groups = patient_split(dataset, options.test_fraction, options.seed)
    test_groups = list(test_groups or [])
    check_disjoint(train_groups, test_groups)
    train_samples = dataset.subset(train_groups)
    test_samples = dataset.subset(test_groups)
    if len(train_samples) < 2 * dist_info.world:
        raise DatasetError(f"{dataset.root}: only {len(train_samples)} training images")
    if resume_state is not None:
        scale = LabelScale(**{k: float(v) for k, v in resume_state["label_scale"].items()})
    else:
        mos = np.array([s.mos for s in train_samples])
        if np.ptp(mos) == 0:
            raise DatasetError(f"{dataset.root}: all training MOS values are equal ({mos[0]})")
        scale = LabelScale(float(mos.min()), float(mos.max()))
    targets = scale.normalise(np.array([s.mos for s in train_samples], dtype=np.float64))

    simulated = dataset.simulated or bool(resume_state and resume_state.get("simulated"))
    prep = Preprocessing(size=config.image_size)
    render_protocol = dataset.render_protocol
    pretrained_weights: dict[str, str] = {}
    if resume_state is not None:
        render_protocol = resume_state.get("render_protocol", render_protocol)
        pretrained_weights = dict(
            resume_state.get("train_options", {}).get("pretrained_weights", {})
        )

    torch.manual_seed(derive_seed(options.seed, "msiqa/torch") % 2**63)
    model = MsIqa(config)
    wants_weights = options.resnet_weights is not None or options.swin_weights is not None
    if (options.pretrained or wants_weights) and resume_state is None:
        from petctiqa.msiqa.weights import load_pretrained_trunks

        used = load_pretrained_trunks(
            model, options.resnet_weights, options.swin_weights, all_trunks=options.pretrained
        )
        pretrained_weights = {name: str(path) for name, path in used.items()}
    model.to(device)
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    history: list[dict[str, float]] = []
    best = {"epoch": 0, "srocc": -math.inf, "plcc": math.nan}
    start_epoch = 1
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        if resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        history = [dict(row) for row in resume_state.get("history", [])]
        best = dict(resume_state.get("best", best))
        start_epoch = int(resume_state["epoch"]) + 1
        saved_rng = resume_state["rng"]
        per_rank = resume_state.get("rng_ranks")
        if per_rank and len(per_rank) == dist_info.world:
            saved_rng = per_rank[dist_info.rank]
        restore_rng_state(saved_rng)

    net = model
    if dist_info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.reference_weighting,
        )

    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(options.workers) if options.workers > 0 else None
    base_payload = {
        "config": config.to_dict(),
        "label_scale": {"low": scale.low, "high": scale.high},
        "preprocessing": prep.to_dict(),
        "render_protocol": render_protocol,
        "simulated": simulated,
        "train_groups": list(train_groups),
        "test_groups": list(test_groups),
        "train_options": {
            "epochs": options.epochs,
            "batch_size": options.batch_size,
            "lr": options.lr,
            "seed": options.seed,
            "amp": options.amp,
            "pretrained": bool(pretrained_weights),
            "pretrained_weights": pretrained_weights,
            "dataset": str(dataset.root),
            "layout": dataset.layout,
            "simulated": simulated,
        },
    }
    try:
        for epoch in range(start_epoch, options.epochs + 1):
            net.train()
            batches = epoch_batches(
                len(train_samples), options.batch_size, epoch, options.seed, dist_info.world
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
                x = torch.from_numpy(_load_batch(train_samples, mine, prep, pool))
                x = x.to(device, non_blocking=True)
                if options.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = torch.from_numpy(targets[mine].astype(np.float32)).to(device)
                with torch.autocast(
                    device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                ):
                    pred = net(x)
                loss = msiqa_loss(pred, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
                images_done += len(batch)
                rate = images_done / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", img_s=f"{rate:.1f}")
            seconds = time.perf_counter() - started
            row: dict[str, float] = {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)) if losses else math.nan,
                "train_images_per_s": images_done / max(seconds, 1e-9),
                "epoch_seconds": seconds,
            }
            pred_mos = np.array([])
            rng = rng_state()
            rng_ranks = None
            if dist_info.world > 1:
                rng_ranks = [None] * dist_info.world
                torch.distributed.all_gather_object(rng_ranks, rng)
            if dist_info.main:
                if test_samples:
                    raw = predict(
                        model,
                        [s.image for s in test_samples],
                        device,
                        options.eval_batch_size,
                        amp_dtype,
                        channels_last=options.channels_last,
                        preprocessing=prep,
                    )
                    pred_mos = scale.denormalise(raw)
                    row.update(_correlations(pred_mos, np.array([s.mos for s in test_samples])))
                history.append(row)
                # Best by test SROCC; without a test split, by lowest training loss.
                key = row.get("test_srocc", math.nan) if test_samples else -row["train_loss"]
                improved = not math.isnan(key) and key > best["srocc"]
                if improved:
                    best = {"epoch": epoch, "srocc": key, "plcc": row.get("test_plcc", math.nan)}
                payload = {
                    **base_payload,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                    "epoch": epoch,
                    "history": history,
                    "best": best,
                    "rng": rng,
                }
                if rng_ranks is not None:
                    payload["rng_ranks"] = rng_ranks
                save_checkpoint(last_path, payload)
                if improved or not best_path.is_file():
                    # best.pt is for scoring: no optimizer state (a third of last.pt's size).
                    save_checkpoint(best_path, {**payload, "optimizer": {}, "scaler": {}})
                    if test_samples:
                        mos = np.array([s.mos for s in test_samples])
                        plot_scatter(
                            out_dir / "scatter.png",
                            pred_mos,
                            mos,
                            f"epoch {epoch}: SROCC {row['test_srocc']:.3f}",
                        )
                        write_predictions(out_dir / "predictions.csv", test_samples, pred_mos)
                write_metrics_csv(out_dir / "metrics.csv", history, int(best["epoch"]), simulated)
                plot_curves(out_dir / "curves.png", history)
            if dist_info.world > 1:
                torch.distributed.barrier()
    finally:
        if pool is not None:
            pool.shutdown()
    if dist_info.world > 1:
        # Only rank 0 evaluated: give every rank its history and best epoch.
        shared = [history, best]
        torch.distributed.broadcast_object_list(shared, src=0)
        history, best = shared
    last = history[-1] if history else {}
    return TrainResult(
        out_dir=out_dir,
        best_epoch=int(best["epoch"]),
        best_srocc=float(best["srocc"]) if test_samples else math.nan,
        best_plcc=float(best["plcc"]),
        last_checkpoint=last_path,
        best_checkpoint=best_path,
        history=tuple(history),
        last_epoch=int(last.get("epoch", 0)),
        last_srocc=float(last.get("test_srocc", math.nan)),
        last_plcc=float(last.get("test_plcc", math.nan)),
        simulated=simulated,
        model=model,
    )


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.array(values, dtype=np.float64)
    return float(np.mean(array)), float(np.std(array, ddof=1)) if len(array) > 1 else 0.0


def train_folds(
    dataset: IqaDataset, out_dir: Path, folds: int, options: TrainOptions = TrainOptions()
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
