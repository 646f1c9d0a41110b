"""``petctiqa train``: train MS-IQA on a rated image set (torch is imported only when run)."""

from __future__ import annotations

from pathlib import Path

import click


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
    help="Start from ImageNet weights (local files or the offline timm/HF cache).",
)
@click.option("--resnet-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--swin-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt (per fold with --folds).")
@click.option("--no-resnet", is_flag=True, help="Ablation: Swin features only.")
@click.option("--no-swin", is_flag=True, help="Ablation: ResNet features only.")
@click.option("--no-fusion", is_flag=True, help="Ablation: no multi-scale fusion module.")
@click.option("--no-weighting", is_flag=True, help="Ablation: no score-regressor weighting.")
@click.option("--stages", default="1,2,3,4", show_default=True, help="Fused stages, e.g. 1,2,3.")
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
    resume: bool,
    no_resnet: bool,
    no_swin: bool,
    no_fusion: bool,
    no_weighting: bool,
    stages: str,
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
        resume=resume,
        model=config,
    )
    dataset = load_iqa_dataset(data_path)
    click.echo(
        f"{dataset.layout}: {len(dataset.samples)} images, {len(dataset.groups)} patients", err=True
    )
    if folds:
        result = train_folds(dataset, out_dir, folds, options)
        for i, fold in enumerate(result.folds, start=1):
            click.echo(
                f"fold {i}: best epoch {fold.best_epoch} SROCC {fold.best_srocc:.4f} "
                f"PLCC {fold.best_plcc:.4f}"
            )
        click.echo(
            f"SROCC {result.srocc_mean:.4f} +- {result.srocc_std:.4f}  "
            f"PLCC {result.plcc_mean:.4f} +- {result.plcc_std:.4f}  ({out_dir}/folds.csv)"
        )
        return
    result = run_train(dataset, out_dir, options)
    click.echo(
        f"best epoch {result.best_epoch}: SROCC {result.best_srocc:.4f} "
        f"PLCC {result.best_plcc:.4f}; checkpoint {result.best_checkpoint}"
    )
