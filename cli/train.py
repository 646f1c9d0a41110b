"""``petctiqa train``: train a registered IQA model on a rated image set (torch is imported
only when run)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import click

from petctiqa.errors import ModelError
from petctiqa_cli._common import echo_warnings, main_rank


def report_single(result) -> None:
    """Print a run's last-epoch (unbiased) and best-epoch (test-selected) figures (rank 0)."""
    if not main_rank():
        return
    sim = " [SIMULATED ratings]" if result.simulated else ""
    click.echo(
        f"last epoch {result.last_epoch}: SROCC {result.last_srocc:.4f} "
        f"PLCC {result.last_plcc:.4f} (unbiased; {result.last_checkpoint}){sim}"
    )
    click.echo(
        f"best epoch {result.best_epoch}: SROCC {result.best_srocc:.4f} "
        f"PLCC {result.best_plcc:.4f} (chosen by test SROCC: optimistic; "
        f"{result.best_checkpoint})"
    )
    if result.level_table_srocc == result.level_table_srocc:
        click.echo(
            f"level-table baseline (cell means of the training images' MOS from their true "
            f"distortion levels) on the same test images: SROCC {result.level_table_srocc:.4f} "
            f"PLCC {result.level_table_plcc:.4f}"
        )
    report_files(result.out_dir)


def report_files(out_dir: Path) -> None:
    """Say what the run keeps and why (checkpoints are the big files)."""
    sizes = {
        name: (out_dir / name).stat().st_size / 1e6
        for name in ("last.pt", "best.pt")
        if (out_dir / name).is_file()
    }
    if sizes:
        click.echo(
            f"kept in {out_dir}: last.pt ({sizes.get('last.pt', 0):.0f} MB: weights + optimiser "
            f"state, for --resume; delete it when done training), best.pt "
            f"({sizes.get('best.pt', 0):.0f} MB: weights only, for score/evaluate), metrics.csv, "
            "curves.png, scatter.png, predictions.csv"
        )


def report_folds(result, out_dir: Path) -> None:
    """Print per-fold and mean +- std figures, last epoch and best epoch (rank 0)."""
    if not main_rank():
        return
    for i, fold in enumerate(result.folds, start=1):
        click.echo(
            f"fold {i}: last epoch {fold.last_epoch} SROCC {fold.last_srocc:.4f} "
            f"PLCC {fold.last_plcc:.4f}; best epoch {fold.best_epoch} "
            f"SROCC {fold.best_srocc:.4f} PLCC {fold.best_plcc:.4f}"
        )
    click.echo(
        f"last epoch (unbiased): SROCC {result.last_srocc_mean:.4f} +- "
        f"{result.last_srocc_std:.4f}  PLCC {result.last_plcc_mean:.4f} +- "
        f"{result.last_plcc_std:.4f}"
    )
    click.echo(
        f"best epoch (chosen on the test fold: optimistic): SROCC {result.srocc_mean:.4f} +- "
        f"{result.srocc_std:.4f}  PLCC {result.plcc_mean:.4f} +- {result.plcc_std:.4f}  "
        f"({out_dir}/folds.csv)"
    )


# Options a preset may set; an option the user gives explicitly always wins.
PRESET_KEYS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "head_lr": "head_lr",
    "weight_decay": "weight_decay",
    "warmup_epochs": "warmup_epochs",
    "schedule": "schedule",
    "model_name": "model_name",
    "amp": "amp",
    "head_only_epochs": "head_only_epochs",
}


def _explicit(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (
        click.core.ParameterSource.DEFAULT,
        click.core.ParameterSource.DEFAULT_MAP,
    )


@click.command("train")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="build-dataset folder (mos.csv from `collect-ratings export`), PET-CT-IQA-DS folder "
    "(label.txt), LDCTIQAC2023 folder (train.json) or a CSV with path,mos[,group] (paths in a "
    "CSV are relative to the CSV's folder).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder: last.pt (resume state), best.pt (for scoring), metrics.csv, "
    "curves.png, scatter.png, predictions.csv; pretrain/ with --preset cpu.",
)
@click.option(
    "--preset",
    type=click.Choice(["cpu", "paper"]),
    default="paper",
    show_default=True,
    help="cpu: petct-cnn on native crops with generator pretraining on the training side's "
    "references (its time on 2 cores: docs/learning.md); paper: MS-IQA as published (GPU).",
)
@click.option(
    "--model",
    "model_name",
    default="msiqa",
    show_default=True,
    help="Registered model (`petctiqa models`); the preset sets it unless given.",
)
@click.option(
    "--test-data",
    "test_path",
    type=click.Path(exists=True, path_type=Path),
    help="Train on ALL of --data and evaluate every epoch on every image of this source "
    "(any layout --data accepts).",
)
@click.option(
    "--init",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from `petctiqa pretrain` weights (pretrained.pt); skips the preset's pretraining.",
)
@click.option(
    "--pretrain-steps",
    type=click.IntRange(0),
    default=None,
    help="Generator pretraining steps of the preset (0: none) [preset cpu: 500].",
)
@click.option(
    "--pretrain-target",
    type=click.Choice(["parameters", "parameters+ranking"]),
    default=None,
    help="Target of the preset's generator pretraining [preset cpu: parameters].",
)
@click.option(
    "--epochs",
    default=10,
    show_default=True,
    type=click.IntRange(1),
    help="Passes over the training images (preset cpu: 6).",
)
@click.option(
    "--batch-size",
    default=16,
    show_default=True,
    type=click.IntRange(2),
    help="Global batch size (split across torchrun processes).",
)
@click.option(
    "--lr",
    default=1e-5,
    show_default=True,
    type=float,
    help="Learning rate of the trunk (and head unless --head-lr).",
)
@click.option("--head-lr", type=float, default=None, help="Learning rate of the head.")
@click.option(
    "--weight-decay",
    default=0.0,
    show_default=True,
    type=float,
    help="0: Adam (paper); > 0: AdamW with this decay.",
)
@click.option(
    "--head-only-epochs",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="First epochs in which only the head learns (trunk frozen) [preset cpu: 2 of 2].",
)
@click.option(
    "--warmup-epochs",
    default=0.0,
    show_default=True,
    type=float,
    help="Linear learning-rate warm-up, in epochs.",
)
@click.option(
    "--schedule",
    default="constant",
    show_default=True,
    type=click.Choice(["constant", "cosine"]),
    help="Learning-rate decay after warm-up.",
)
@click.option(
    "--crop",
    type=click.IntRange(16),
    default=None,
    help="Native-resolution crops of this size (multiple of 16; no resize) instead of the "
    "preset's input; evaluation averages a --crop-grid x --crop-grid set of crops.",
)
@click.option(
    "--crop-grid",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Crops per side at evaluation and scoring (with --crop); 0: the whole image in one "
    "pass (fully convolutional models such as petct-cnn; MS-IQA needs a grid).",
)
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])
)
@click.option(
    "--amp",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "bf16", "fp16", "off"]),
    help="Autocast precision (auto: bf16/fp16 on CUDA, off on CPU).",
)
@click.option("--channels-last", is_flag=True, help="Use the channels_last memory format.")
@click.option(
    "--folds",
    default=None,
    type=click.IntRange(2),
    help="K-fold cross-validation by patient (K = number of patients: leave-one-out).",
)
@click.option(
    "--test-fraction",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 0.9),
    help="Test patients when the data has no split of its own.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of the split, batch order, crops, initial weights and pretraining.",
)
@click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Image-decoding threads (0: decode in the training thread; 2-4 help on GPUs).",
)
@click.option(
    "--protocol",
    default=None,
    help="Dataset protocol whose distortions the preset's pretraining re-applies "
    "[default: pet-ct-iqa-ds].",
)
@click.option(
    "--pretrained",
    is_flag=True,
    help="MS-IQA: start both trunks from ImageNet weights (local files or the offline cache).",
)
@click.option(
    "--resnet-weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="ResNet-50 ImageNet weights (.pth/.safetensors); implies --pretrained for this trunk.",
)
@click.option(
    "--swin-weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Swin-T ImageNet weights (.pth/.safetensors); implies --pretrained for this trunk.",
)
@click.option(
    "--allow-simulated",
    is_flag=True,
    help="Train even though the ratings are SIMULATED (pilot runs); outputs are marked so.",
)
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt (per fold with --folds).")
@click.option("--no-resnet", is_flag=True, help="MS-IQA ablation: Swin features only.")
@click.option("--no-swin", is_flag=True, help="MS-IQA ablation: ResNet features only.")
@click.option("--no-fusion", is_flag=True, help="MS-IQA ablation: no multi-scale fusion module.")
@click.option("--no-weighting", is_flag=True, help="MS-IQA ablation: no score-regressor weighting.")
@click.option(
    "--stages", default="1,2,3,4", show_default=True, help="MS-IQA fused stages, e.g. 1,2,3."
)
@click.option(
    "--image-size",
    default=224,
    show_default=True,
    type=click.IntRange(32),
    help="MS-IQA input size; Swin needs 224, --no-swin accepts any multiple of 32.",
)
@click.option(
    "--reference-weighting",
    is_flag=True,
    help="MS-IQA: reproduce the reference code's score sum(S*W)/sum(W) (= S).",
)
@click.pass_context
def train(
    ctx: click.Context,
    data_path: Path,
    out_dir: Path,
    preset: str,
    test_path: Path | None,
    protocol: str | None,
    crop: int | None,
    crop_grid: int,
    folds: int | None,
    pretrain_steps: int | None,
    pretrain_target: str | None,
    **values,
) -> None:
    """Train a registered model (0.5 MSE + 0.5 ranking loss) on rated images.

    \b
    Examples:
      petctiqa train --data ../shared/data/pet-ct-iqa-ds-dev --out run/ --preset cpu --folds 2
      petctiqa train --data ds/ --out run/ --preset cpu --test-data ../shared/data/pet-ct-iqa-ds-dev
      petctiqa train --data ds/ --out run/ --init pre/pretrained.pt --model petct-cnn --crop 256
      petctiqa train --data ds/ --out run/ --preset paper --device cuda
      petctiqa train --data ds/ --out run/ --pretrained --resnet-weights r50.pth --swin-weights swin.safetensors
      petctiqa train --data ds/ --out run/ --resume --epochs 30
      torchrun --nproc_per_node 2 -m petctiqa_cli.main train --data ds/ --out run/
      petctiqa train --data ds/ --out abl/ --no-resnet          # MS-IQA Table 2 ablation

    Two figures are printed: the last epoch's test SROCC/PLCC (unbiased: report this one) and
    the best epoch's (best.pt, chosen by test SROCC, so optimistic). When the training and test
    images carry distortion levels, the level-table baseline on the same test images is printed
    too: the bar a learned model must clear. A build-dataset folder needs ratings first:
    `petctiqa collect-ratings export` (reader study) or `collect-ratings simulate` (pilot).
    """
    # Long on purpose: the help text above and one line per option passed to the preset.
    # lazy: `petctiqa --help` imports this module; the trainer pulls in pandas, OpenCV
    from petctiqa.iqa.data import load_iqa_dataset
    from petctiqa.iqa.folds import train_folds
    from petctiqa.iqa.preprocess import Preprocessing
    from petctiqa.iqa.presets import get_preset, preset_options, train_with_recipe

    chosen = get_preset(preset)
    overrides = {
        key: values[key] for key in PRESET_KEYS if _explicit(ctx, key) or key not in chosen.train
    }
    model_name = overrides.get("model_name", chosen.train.get("model_name", "msiqa"))
    options = preset_options(
        chosen,
        {
            **overrides,
            "device": values["device"],
            "channels_last": values["channels_last"],
            "test_fraction": values["test_fraction"],
            "seed": values["seed"],
            "workers": values["workers"],
            "pretrained": values["pretrained"],
            "resnet_weights": values["resnet_weights"],
            "swin_weights": values["swin_weights"],
            "allow_simulated": values["allow_simulated"],
            "resume": values["resume"],
            "init": values["init"],
            "model": _model_config(model_name, values),
        },
    )
    if crop is not None:
        options = replace(
            options, preprocessing=Preprocessing(size=crop, mode="crops", grid=crop_grid)
        )
    elif model_name != chosen.train.get("model_name"):
        options = replace(options, preprocessing=None)
    pretrain_options = chosen.pretrain if model_name == chosen.train.get("model_name") else None
    if pretrain_steps is not None:
        base = pretrain_options or get_preset("cpu").pretrain
        pretrain_options = replace(base, steps=pretrain_steps) if pretrain_steps else None
    if pretrain_target is not None and pretrain_options is not None:
        pretrain_options = replace(pretrain_options, target=pretrain_target)
    with echo_warnings(), _trunk_weights_in_cli_words():
        dataset = load_iqa_dataset(data_path)
        test_dataset = load_iqa_dataset(test_path) if test_path is not None else None
        if main_rank():
            click.echo(
                f"{dataset.layout}: {len(dataset.samples)} images, {len(dataset.groups)} patients; "
                f"model {options.model_name}, preset {preset}",
                err=True,
            )
        if folds:
            if test_dataset is not None:
                raise click.UsageError("--folds and --test-data exclude each other")
            report_folds(
                train_folds(dataset, out_dir, folds, options, pretrain_options, protocol), out_dir
            )
        else:
            result = train_with_recipe(
                dataset, out_dir, options, pretrain_options, protocol, test_dataset
            )
            report_single(result)


@contextlib.contextmanager
def _trunk_weights_in_cli_words() -> Iterator[None]:
    """The library names the trunk whose weights are missing; the CLI names its option."""
    # lazy: `petctiqa --help` imports this module; msiqa pulls in torch
    from petctiqa.msiqa.model import RESNET_NAME, SWIN_NAME
    from petctiqa.msiqa.weights import TrunkWeightsError

    flags = {RESNET_NAME: "--resnet-weights", SWIN_NAME: "--swin-weights"}
    try:
        yield
    except TrunkWeightsError as exc:
        raise ModelError(f"{flags.get(exc.trunk, '--pretrained')}: {exc}") from None


def _model_config(model_name: str, values: dict):
    """The MS-IQA config from the ablation flags; other models use their defaults."""
    if model_name != "msiqa":
        return None
    from petctiqa.msiqa.model import MsIqaConfig  # lazy: --help must not import torch

    stages = values["stages"]
    try:
        stage_tuple = tuple(int(s) for s in stages.split(",") if s.strip())
    except ValueError:
        raise ModelError(f"--stages {stages!r}: expected comma-separated stage numbers") from None
    return MsIqaConfig(
        use_resnet=not values["no_resnet"],
        use_swin=not values["no_swin"],
        use_fusion=not values["no_fusion"],
        use_weighting=not values["no_weighting"],
        stages=stage_tuple,
        reference_weighting=values["reference_weighting"],
        image_size=values["image_size"],
    )
