"""``petctiqa train``: train MS-IQA on a rated image set (torch is imported only when run)."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import click


def _main_rank() -> bool:
    """Rank 0 of a torchrun job, or not distributed (before or after the process group)."""
    import sys

    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def echo_warnings() -> Iterator[None]:
    """Show Python warnings as one ``warning: ...`` line on stderr (rank 0 only under DDP)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if _main_rank():
            click.echo(f"warning: {message}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def report_single(result) -> None:
    """Print a run's last-epoch (unbiased) and best-epoch (test-selected) figures (rank 0)."""
    if not _main_rank():
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


def report_folds(result, out_dir: Path) -> None:
    """Print per-fold and mean +- std figures, last epoch and best epoch (rank 0)."""
    if not _main_rank():
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


@click.command("train")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="build-dataset folder (mos.csv), PET-CT-IQA-DS folder (label.txt), "
    "LDCTIQAC2023 folder (train.json) or a CSV with path,mos[,group].",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder: last.pt, best.pt, metrics.csv, curves.png, scatter.png.",
)
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(1))
@click.option(
    "--batch-size",
    default=16,
    show_default=True,
    type=click.IntRange(2),
    help="Global batch size (split across torchrun processes).",
)
@click.option("--lr", default=1e-5, show_default=True, type=float, help="Adam learning rate.")
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
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Image-decoding threads.",
)
@click.option(
    "--pretrained",
    is_flag=True,
    help="Start both trunks from ImageNet weights (local files or the offline timm/HF cache).",
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
@click.option("--no-resnet", is_flag=True, help="Ablation: Swin features only.")
@click.option("--no-swin", is_flag=True, help="Ablation: ResNet features only.")
@click.option("--no-fusion", is_flag=True, help="Ablation: no multi-scale fusion module.")
@click.option("--no-weighting", is_flag=True, help="Ablation: no score-regressor weighting.")
@click.option("--stages", default="1,2,3,4", show_default=True, help="Fused stages, e.g. 1,2,3.")
@click.option(
    "--image-size",
    default=224,
    show_default=True,
    type=click.IntRange(32),
    help="Input size; Swin needs 224, --no-swin accepts any multiple of 32.",
)
@click.option(
    "--reference-weighting",
    is_flag=True,
    help="Reproduce the reference code's score sum(S*W)/sum(W) (= S).",
)
def train(
    data_path: Path,
    out_dir: Path,
    epochs: int,
    batch_size: int,
    lr: float,
    device: str,
    amp: str,
    channels_last: bool,
    folds: int | None,
    test_fraction: float,
    seed: int,
    workers: int,
    pretrained: bool,
    resnet_weights: Path | None,
    swin_weights: Path | None,
    allow_simulated: bool,
    resume: bool,
    no_resnet: bool,
    no_swin: bool,
    no_fusion: bool,
    no_weighting: bool,
    stages: str,
    image_size: int,
    reference_weighting: bool,
) -> None:
    """Train MS-IQA (Adam, 0.5 MSE + 0.5 ranking loss, paper defaults).

    \b
    Examples:
      petctiqa train --data ds/ --out run/
      petctiqa train --data ../shared/data/pet-ct-iqa-ds-dev --out lopo/ --folds 2 --epochs 20
      petctiqa train --data ds/ --out run/ --pretrained --resnet-weights r50.pth --swin-weights swin.safetensors
      petctiqa train --data ds/ --out run/ --resume --epochs 30
      torchrun --nproc_per_node 2 -m petctiqa_cli.main train --data ds/ --out run/
      petctiqa train --data ds/ --out abl/ --no-resnet          # Table 2 ablation

    Two figures are printed: the last epoch's test SROCC/PLCC (unbiased) and the best epoch's
    (best.pt, chosen by test SROCC, so optimistic). A weight file given with --resnet-weights or
    --swin-weights loads that trunk even without --pretrained.
    """
    from petctiqa.errors import ModelError
    from petctiqa.msiqa.data import load_iqa_dataset
    from petctiqa.msiqa.model import MsIqaConfig
    from petctiqa.msiqa.train import TrainOptions, train_folds
    from petctiqa.msiqa.train import train as run_train

    try:
        stage_tuple = tuple(int(s) for s in stages.split(",") if s.strip())
    except ValueError:
        raise ModelError(f"--stages {stages!r}: expected comma-separated stage numbers") from None
    config = MsIqaConfig(
        use_resnet=not no_resnet,
        use_swin=not no_swin,
        use_fusion=not no_fusion,
        use_weighting=not no_weighting,
        stages=stage_tuple,
        reference_weighting=reference_weighting,
        image_size=image_size,
    )
    options = TrainOptions(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        amp=amp,
        channels_last=channels_last,
        workers=workers,
        test_fraction=test_fraction,
        pretrained=pretrained,
        resnet_weights=resnet_weights,
        swin_weights=swin_weights,
        allow_simulated=allow_simulated,
        resume=resume,
        model=config,
    )
    with echo_warnings():
        dataset = load_iqa_dataset(data_path)
        if _main_rank():
            click.echo(
                f"{dataset.layout}: {len(dataset.samples)} images, {len(dataset.groups)} patients",
                err=True,
            )
        if folds:
            report_folds(train_folds(dataset, out_dir, folds, options), out_dir)
        else:
            report_single(run_train(dataset, out_dir, options))
