"""Training presets and the recipe that runs one: ``paper`` (MS-IQA as published) and ``cpu``
(the CPU-class model with generator pretraining on the training side's own clean references).

A preset is data: the model, its preprocessing, the training options and, optionally, the
pretraining to run first. :func:`train_with_recipe` pretrains on the clean references of the
*training* images only (never the test side's: no transductive use of test data), then trains
from those weights. The settings of ``cpu`` were chosen by training on one dev patient and
testing on the other, in both directions (docs/learning.md); they are not tuned on any other
data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from petctiqa.errors import ModelError
from petctiqa.iqa.data import patient_split
from petctiqa.iqa.generator import DistortionRanges
from petctiqa.iqa.preprocess import Preprocessing
from petctiqa.iqa.pretrain import PretrainOptions, pretrain
from petctiqa.iqa.references import references_from_samples
from petctiqa.iqa.train import train
from petctiqa.iqa.train_setup import TrainOptions
from petctiqa.protocol import load_dataset_protocol

PRETRAIN_FOLDER = "pretrain"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    train: dict[str, Any]
    """TrainOptions fields this preset sets."""
    preprocessing: Preprocessing | None
    """None: the model's own (MS-IQA: resize to its image size)."""
    pretrain: PretrainOptions | None = None
    pretrain_fields: tuple[str, ...] = field(default=())


CPU_CROP = Preprocessing(size=256, mode="crops", grid=0)

PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        description="MS-IQA as published: 224-px bicubic resize, Adam 1e-5, batch 16, 10 epochs",
        train={"model_name": "msiqa", "epochs": 10, "batch_size": 16, "lr": 1e-5},
        preprocessing=None,
    ),
    "cpu": Preset(
        name="cpu",
        description=(
            "petct-cnn on 256-px native crops (whole image at evaluation), generator "
            "pretraining on the training references, closed-form response-table head refined "
            "for 2 epochs with the trunk frozen (end-to-end fine-tuning lowered unseen-patient "
            "SROCC on the dev sample)"
        ),
        train={
            "model_name": "petct-cnn",
            "epochs": 2,
            "head_only_epochs": 2,
            "batch_size": 16,
            "lr": 1e-4,
            "head_lr": 1e-3,
            "weight_decay": 1e-4,
            "warmup_epochs": 0.5,
            "schedule": "cosine",
            "amp": "off",
        },
        preprocessing=CPU_CROP,
        pretrain=PretrainOptions(steps=500, batch_size=16, lr=2e-3),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}") from None


def preset_options(preset: Preset, overrides: dict[str, Any]) -> TrainOptions:
    """TrainOptions from the preset, then the caller's explicit ``overrides``."""
    values = {**preset.train, "preprocessing": preset.preprocessing, **overrides}
    return TrainOptions(**values)


def train_with_recipe(
    dataset,
    out_dir: Path,
    options: TrainOptions,
    pretrain_options: PretrainOptions | None,
    protocol: str | Path | None = None,
    test_dataset=None,
    train_groups: list[str] | None = None,
    test_groups: list[str] | None = None,
):
    """Pretrain on the training side's references (when ``pretrain_options`` is given and
    ``options.init`` is not), then :func:`petctiqa.iqa.train.train`."""
    out_dir = Path(out_dir)
    if pretrain_options is not None and options.init is None and not options.resume:
        if test_dataset is not None:
            train_samples = list(dataset.samples)
        else:
            if train_groups is None:
                train_groups, test_groups = patient_split(
                    dataset, options.test_fraction, options.seed
                )
            train_samples = dataset.subset(train_groups)
        weights = pretrain_on_samples(
            train_samples, out_dir / PRETRAIN_FOLDER, options, pretrain_options, protocol
        )
        options = replace(options, init=weights)
    return train(dataset, out_dir, options, train_groups, test_groups, test_dataset)


def pretrain_on_samples(samples, out_dir: Path, options, pretrain_options, protocol) -> Path:
    """Pretrain ``options.model_name`` on the clean references of ``samples``."""
    references = references_from_samples(samples)
    if not references:
        raise ModelError(
            "the training images have no known clean references (distortion levels or a "
            "manifest reference column are needed for generator pretraining); train without "
            "pretraining or pretrain on other sources with `petctiqa pretrain`"
        )
    protocol_record = load_dataset_protocol(protocol) if protocol else load_dataset_protocol()
    ranges = DistortionRanges.from_settings(protocol_record.distortions)
    prep = options.preprocessing or Preprocessing()
    settings = replace(pretrain_options, seed=options.seed, device=options.device)
    settings = replace(settings, progress=options.progress)
    result = pretrain(
        options.model_name, references, ranges, prep, out_dir, settings, options.model
    )
    return result.output
