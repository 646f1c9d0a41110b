"""``petctiqa pretrain``: distortion-aware pretraining from generator labels (no human labels,
no ImageNet).

The network learns to read the strength of each protocol distortion from distorted crops of
clean references (:mod:`petctiqa.iqa.generator`). Models with their own distortion head
(``distortions(x)``, e.g. ``petct-cnn``) train it; others (MS-IQA) get a linear head on
``features(x)`` that is used here only. The result, ``pretrained.pt``, holds the model's full
state dict; ``train --init pretrained.pt`` starts from it.

Determinism: sample ``i`` is a pure function of (seed, i, references); weights are initialised
from ``derive_seed(seed, "pretrain/torch")``; a state file written every ``save_every`` steps
(atomically) lets a killed run resume to the same weights as an uninterrupted one on CPU.
"""

from __future__ import annotations

import math
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from petctiqa.errors import ModelError
from petctiqa.iqa.checkpoint import save_torch_file
from petctiqa.iqa.device import resolve_device
from petctiqa.iqa.generator import (
    TARGET_NAMES,
    DistortionRanges,
    SampleSettings,
    generator_pair,
    generator_sample,
)
from petctiqa.iqa.preprocess import Preprocessing, rgb_to_array
from petctiqa.iqa.references import Reference
from petctiqa.models import build_model, get_model_entry
from petctiqa.seeding import derive_seed

PRETRAIN_FORMAT = "petctiqa-pretrain"
PRETRAIN_VERSION = 1
STATE_NAME = "pretrain-state.pt"
OUTPUT_NAME = "pretrained.pt"
PRETRAIN_TARGETS = ("parameters", "parameters+ranking")
RANKING_MARGIN = 0.1
"""Margin of the ranking loss, in strength units (the middle level is 0.5 from none)."""


@dataclass(frozen=True)
class PretrainOptions:
    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    warmup: float = 0.1
    """Fraction of the steps spent warming the learning rate up (one-cycle schedule)."""
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    save_every: int = 50
    progress: bool = True
    augment: bool = False
    """Random rotation/flip of the reference before each crop (generator.dihedral)."""
    target: str = "parameters"
    """``parameters``: MSE on the distortion strengths. ``parameters+ranking``: the batch is
    pairs of two distortions of the same crop, and a per-axis margin ranking loss on which of
    the two is the stronger is added to the MSE."""

    def __post_init__(self) -> None:
        if self.target not in PRETRAIN_TARGETS:
            raise ModelError(
                f"pretraining target {self.target!r}: use one of {', '.join(PRETRAIN_TARGETS)}"
            )
        if self.target != "parameters" and self.batch_size % 2:
            raise ModelError(f"the ranking target needs an even batch size, got {self.batch_size}")


@dataclass(frozen=True)
class PretrainResult:
    output: Path
    steps: int
    final_loss: float
    seconds: float
    references: int


def _head(model, outputs: int):
    """The model's own distortion head, or a linear probe on its features."""
    if hasattr(model, "distortions"):
        return None
    return torch.nn.Linear(model.feature_dim, outputs)


def _predict_distortions(model, head, x):
    return model.distortions(x) if head is None else head(model.features(x))


def _batch(
    references: list[np.ndarray],
    ranges: DistortionRanges,
    prep: Preprocessing,
    options: PretrainOptions,
    step: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Step ``step``'s inputs and targets; with the ranking target, rows 2i and 2i+1 are the
    two distortions of pair i."""
    # Native crops are cut before distorting; a resizing model sees whole distorted images.
    side = prep.size if prep.mode == "crops" else max(max(r.shape[:2]) for r in references)
    settings = SampleSettings(crop=side, augment=options.augment)
    patches, targets = [], []
    if options.target == "parameters":
        for j in range(options.batch_size):
            index = step * options.batch_size + j
            patch, target = generator_sample(references, ranges, settings, options.seed, index)
            patches.append(patch)
            targets.append(target)
    else:
        pairs = options.batch_size // 2
        for j in range(pairs):
            index = step * pairs + j
            first, t1, second, t2 = generator_pair(
                references, ranges, settings, options.seed, index
            )
            patches += [first, second]
            targets += [t1, t2]
    inputs = [rgb_to_array(patch, preprocessing=prep) for patch in patches]
    return np.stack(inputs), np.stack(targets)


def pretrain_loss(pred, target, target_kind: str):
    """MSE on the strengths, plus (ranking target) a per-axis margin ranking loss between the
    two members of each pair, on axes where their true strengths differ."""
    loss = torch.nn.functional.mse_loss(pred, target)
    if target_kind == "parameters":
        return loss
    sign = torch.sign(target[0::2] - target[1::2])
    hinge = torch.relu(RANKING_MARGIN - sign * (pred[0::2] - pred[1::2]))
    ranked = sign != 0
    if bool(ranked.any()):
        loss = loss + hinge[ranked].mean()
    return loss


def _payload(entry, config, model, head, ranges, prep, options, step, loss) -> dict[str, Any]:
    return {
        "format": PRETRAIN_FORMAT,
        "format_version": PRETRAIN_VERSION,
        "model_name": entry.name,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "probe": head.state_dict() if head is not None else {},
        "ranges": asdict(ranges),
        "targets": list(TARGET_NAMES),
        "preprocessing": prep.to_dict(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "step": step,
        "loss": loss,
    }


def pretrain(
    model_name: str,
    references: list[Reference],
    ranges: DistortionRanges,
    prep: Preprocessing,
    out_dir: Path,
    options: PretrainOptions = PretrainOptions(),
    config: Any = None,
    log=None,
) -> PretrainResult:
    """Pretrain ``model_name`` on generator samples; writes ``out_dir/pretrained.pt``."""
    if not references:
        raise ModelError("pretraining needs at least one clean reference image")
    entry = get_model_entry(model_name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(options.device)
    torch.manual_seed(derive_seed(options.seed, "pretrain/torch") % 2**63)
    model, config = build_model(model_name, config)
    head = _head(model, len(TARGET_NAMES))
    params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
    model.to(device)
    if head is not None:
        head.to(device)
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=options.lr, total_steps=options.steps, pct_start=options.warmup
    )
    start, loss_value = _resume(out_dir, model, head, optimizer, schedule, model_name, options)
    images = [r.rgb for r in references]
    started = time.perf_counter()
    model.train()
    bar = tqdm(
        range(start, options.steps),
        initial=start,
        total=options.steps,
        desc="pretrain",
        unit="step",
        disable=not options.progress,
    )
    for step in bar:
        x, y = _batch(images, ranges, prep, options, step)
        pred = _predict_distortions(model, head, torch.from_numpy(x).to(device))
        loss = pretrain_loss(pred, torch.from_numpy(y).to(device), options.target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_value = float(loss.detach())
        bar.set_postfix(loss=f"{loss_value:.4f}")
        done = step + 1
        if done % options.save_every == 0 and done < options.steps:
            _save_state(out_dir, model, head, optimizer, schedule, model_name, options, done)
    payload = _payload(entry, config, model, head, ranges, prep, options, options.steps, loss_value)
    output = out_dir / OUTPUT_NAME
    save_torch_file(output, payload)
    (out_dir / STATE_NAME).unlink(missing_ok=True)
    return PretrainResult(
        output=output,
        steps=options.steps,
        final_loss=loss_value,
        seconds=time.perf_counter() - started,
        references=len(references),
    )


def _run_key(model_name: str, options: PretrainOptions) -> dict[str, Any]:
    """What must match for a state file to be resumed (everything that changes the result)."""
    keys = ("steps", "batch_size", "lr", "warmup", "weight_decay", "seed", "augment", "target")
    return {"model_name": model_name, **{k: getattr(options, k) for k in keys}}


def _save_state(out_dir, model, head, optimizer, schedule, model_name, options, step) -> None:
    save_torch_file(
        out_dir / STATE_NAME,
        {
            "key": _run_key(model_name, options),
            "step": step,
            "model": model.state_dict(),
            "probe": head.state_dict() if head is not None else {},
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "torch_rng": torch.get_rng_state(),
        },
    )


def _resume(out_dir, model, head, optimizer, schedule, model_name, options) -> tuple[int, float]:
    path = out_dir / STATE_NAME
    if not path.is_file():
        return 0, math.nan
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("key") != _run_key(model_name, options):
        raise ModelError(
            f"{path}: an interrupted pretraining with other settings is in this folder "
            f"({state.get('key')}); remove it or choose another output folder"
        )
    model.load_state_dict(state["model"])
    if head is not None:
        head.load_state_dict(state["probe"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), math.nan


def read_pretrained(path: Path) -> dict[str, Any]:
    """Load and check a ``pretrained.pt``; ModelError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: pretrained weights not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable pretraining file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != PRETRAIN_FORMAT:
        raise ModelError(f"{path}: not a petctiqa pretraining file (petctiqa pretrain writes one)")
    return data


def load_pretrained_into(model, model_name: str, config: Any, path: Path) -> dict[str, Any]:
    """Copy pretrained weights into ``model`` (same registered model and config), for
    ``train --init``. Returns the pretraining file's metadata (without tensors)."""
    data = read_pretrained(path)
    if data.get("model_name") != model_name:
        raise ModelError(
            f"{path}: pretrained for model {data.get('model_name')!r}, not {model_name!r}"
        )
    if dict(data.get("config", {})) != config.to_dict():
        raise ModelError(
            f"{path}: pretrained with config {data.get('config')}, training uses {config.to_dict()}"
        )
    model.load_state_dict(data["model"], strict=True)
    return {k: v for k, v in data.items() if k not in ("model", "probe")}
