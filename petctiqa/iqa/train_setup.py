"""What a training run trains with: the registered model (fresh, from ``pretrain`` weights, from
ImageNet trunks, or from ``last.pt``), its preprocessing, and the optimiser with head/trunk
learning rates and the warm-up/cosine schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from petctiqa.errors import ModelError
from petctiqa.iqa.checkpoint import checkpoint_entry, checkpoint_preprocessing
from petctiqa.iqa.preprocess import Preprocessing
from petctiqa.iqa.pretrain import load_pretrained_into
from petctiqa.models import build_model, get_model_entry, head_and_trunk_parameters
from petctiqa.msiqa.weights import load_pretrained_trunks
from petctiqa.seeding import derive_seed

SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainOptions:
    """Training settings; defaults are the paper's MS-IQA recipe (Adam, lr 1e-5, batch 16,
    224 x 224 resize)."""

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
    """Image-decoding threads (0: decode in the training thread)."""
    test_fraction: float = 0.2
    pretrained: bool = False
    """MS-IQA: ImageNet weights for every trunk (explicit files or the offline caches)."""
    resnet_weights: Path | None = None
    """MS-IQA: a ResNet-50 weight file; implies pretraining for that trunk."""
    swin_weights: Path | None = None
    """MS-IQA: a Swin-T weight file; implies pretraining for that trunk."""
    allow_simulated: bool = False
    """Train on simulated ratings (refused otherwise); the outputs are then marked simulated."""
    resume: bool = False
    progress: bool = True
    eval_batch_size: int = 32
    model: Any = None
    """The model's config object (None: the registry entry's defaults)."""
    model_name: str = "msiqa"
    preprocessing: Preprocessing | None = None
    """None: resize to the model's image size (MS-IQA's reference preprocessing)."""
    init: Path | None = None
    """Weights from ``petctiqa pretrain`` (pretrained.pt) to start from."""
    head_lr: float | None = None
    """Learning rate of the head (None: ``lr``)."""
    weight_decay: float = 0.0
    """0: Adam (the paper's); > 0: AdamW with this decay."""
    warmup_epochs: float = 0.0
    schedule: str = "constant"
    """"constant" or "cosine" (decay to 0 over the run, after the warm-up)."""
    head_only_epochs: int = 0
    """First epochs in which only the head learns (the trunk is frozen, in eval mode): a new
    head first learns to read pretrained features before the features move."""
    fit_head: bool = True
    """Fit the head in closed form before the first epoch, for models that can
    (``fit_quality_head``, e.g. petct-cnn's response table)."""
    max_seconds: float | None = None
    """Stop after the epoch that passes this much training time (equal-budget comparisons)."""

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ModelError(f"schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class TrainSetup:
    """Everything a run trains with, built once (fresh or from ``last.pt``)."""

    entry: Any
    config: Any
    model: Any
    prep: Preprocessing
    optimizer: Any
    scheduler: Any
    scaler: Any
    init_info: dict[str, Any]
    pretrained_weights: dict[str, str]


def _model_and_config(options: TrainOptions, resume_state: dict[str, Any] | None):
    if resume_state is not None:
        entry = checkpoint_entry(resume_state)
        model, config = build_model(entry.name, dict(resume_state["config"]))
        return entry, model, config
    entry = get_model_entry(options.model_name)
    model, config = build_model(entry.name, options.model)
    return entry, model, config


def _preprocessing(options, config, resume_state) -> Preprocessing:
    size = getattr(config, "image_size", 224)
    if resume_state is not None:
        return checkpoint_preprocessing(resume_state, size)
    return options.preprocessing or Preprocessing(size=size)


def _optimizer(model, entry, options: TrainOptions, steps_per_epoch: int):
    head, trunk = head_and_trunk_parameters(model, entry)
    head_lr = options.head_lr if options.head_lr is not None else options.lr
    groups = [g for g in ({"params": trunk, "lr": options.lr}, {"params": head, "lr": head_lr})]
    groups = [g for g in groups if g["params"]]
    if options.weight_decay > 0:
        optimizer = torch.optim.AdamW(groups, weight_decay=options.weight_decay)
    else:
        optimizer = torch.optim.Adam(groups)
    total = options.epochs * steps_per_epoch
    warmup = int(round(options.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, options.schedule)
    )
    return optimizer, scheduler


def set_trunk_trainable(model, entry, trainable: bool) -> None:
    """Freeze or unfreeze everything outside the entry's head prefixes (eval mode when frozen,
    so batch-norm statistics stay those the trunk was trained with)."""
    for name, parameter in model.named_parameters():
        if not name.startswith(entry.head_prefixes):
            parameter.requires_grad_(trainable)
    for name, module in model.named_modules():
        if (
            name
            and not (name + ".").startswith(entry.head_prefixes)
            and not list(module.children())
        ):
            module.train(trainable and model.training)


def build_setup(options, resume_state, device, amp_dtype, steps_per_epoch) -> TrainSetup:
    torch.manual_seed(derive_seed(options.seed, "msiqa/torch") % 2**63)
    entry, model, config = _model_and_config(options, resume_state)
    prep = _preprocessing(options, config, resume_state)
    init_info: dict[str, Any] = {}
    pretrained_weights: dict[str, str] = {}
    if resume_state is not None:
        stored = resume_state.get("train_options", {})
        pretrained_weights = dict(stored.get("pretrained_weights", {}))
        init_info = dict(stored.get("init", {}) or {})
    else:
        if options.init is not None:
            meta = load_pretrained_into(model, entry.name, config, Path(options.init))
            init_info = {
                "path": str(options.init),
                "steps": meta.get("step"),
                "ranges": meta.get("ranges"),
            }
        wants = options.resnet_weights is not None or options.swin_weights is not None
        if options.pretrained or wants:
            if entry.name != "msiqa":
                raise ModelError(f"ImageNet trunk weights apply to msiqa only, not {entry.name!r}")
            used = load_pretrained_trunks(
                model, options.resnet_weights, options.swin_weights, all_trunks=options.pretrained
            )
            pretrained_weights = {name: str(path) for name, path in used.items()}
    model.to(device)
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer, scheduler = _optimizer(model, entry, options, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return TrainSetup(
        entry, config, model, prep, optimizer, scheduler, scaler, init_info, pretrained_weights
    )
