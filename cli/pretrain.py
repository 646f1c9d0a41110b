"""``petctiqa pretrain``: distortion-aware pretraining from generator labels (no human labels)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from petctiqa_cli._common import echo_warnings


@click.command("pretrain")
@click.option(
    "--source",
    "sources",
    multiple=True,
    required=True,
    help="Where clean references come from (repeatable): a build-dataset folder "
    "(references/), a rated folder with known levels (e.g. PET-CT-IQA-DS with groups.csv: its "
    "(0,0,0) images), a DICOM PET/CT folder (rendered), or `phantom` (built-in studies).",
)
@click.option(
    "--patients",
    default=None,
    help="Comma-separated patients to take from rated sources (the training side only).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for pretrained.pt (and the resume state while running).",
)
@click.option(
    "--model",
    "model_name",
    default="petct-cnn",
    show_default=True,
    help="Registered model (`petctiqa models`).",
)
@click.option(
    "--preset",
    type=click.Choice(["cpu", "paper"]),
    default=None,
    help="Take the pretraining settings (steps, batch, lr, augmentation, target) and the input "
    "(crop) from a training preset.",
)
@click.option("--steps", default=200, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(2))
@click.option(
    "--lr",
    default=2e-3,
    show_default=True,
    type=float,
    help="Peak learning rate of the one-cycle schedule.",
)
@click.option(
    "--crop",
    default=256,
    show_default=True,
    type=click.IntRange(16),
    help="Native-resolution crop size (multiple of 16); MS-IQA needs 224.",
)
@click.option(
    "--augment/--no-augment",
    default=False,
    show_default=True,
    help="Rotate/flip each reference at random before cropping (8x the content variety).",
)
@click.option(
    "--target",
    type=click.Choice(["parameters", "parameters+ranking"]),
    default="parameters",
    show_default=True,
    help="parameters: regress the distortion strengths; parameters+ranking: also rank two "
    "distortions of the same crop on each axis (docs/learning.md has the ablation).",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])
)
@click.option(
    "--protocol",
    default=None,
    help="Dataset protocol whose distortions are re-applied [default: pet-ct-iqa-ds].",
)
@click.option(
    "--stride",
    default=8,
    show_default=True,
    type=click.IntRange(1),
    help="DICOM sources: render every N-th CT slice of the PET/CT overlap.",
)
def pretrain(
    sources,
    patients,
    out_dir,
    model_name,
    preset,
    steps,
    batch_size,
    lr,
    crop,
    augment,
    target,
    seed,
    device,
    protocol,
    stride,
) -> None:
    """Teach a model to read distortion strengths from generator-made images.

    Each sample is a clean reference crop, re-distorted with the protocol's own functions at
    parameters drawn from continuous ranges that cover the protocol's levels; the targets are
    those parameters. Deterministic for a seed, resumable (rerun the same command after an
    interruption). Start training from the result with `train --init OUT/pretrained.pt`.

    \b
    Examples:
      petctiqa pretrain --source ../shared/data/pet-ct-iqa-ds-dev --patients P1 --out pre/
      petctiqa pretrain --source ds/ --source phantom --out pre/ --steps 400
      petctiqa pretrain --source lung-pet-ct-dx/ --model msiqa --crop 224 --device cuda --out pre/
      petctiqa train --data ds/ --out run/ --model petct-cnn --crop 256 --init pre/pretrained.pt
    """
    # lazy: `petctiqa --help` imports this module; pretraining pulls in OpenCV
    from petctiqa.iqa.generator import DistortionRanges
    from petctiqa.iqa.preprocess import Preprocessing
    from petctiqa.iqa.presets import get_preset
    from petctiqa.iqa.pretrain import PretrainOptions
    from petctiqa.iqa.pretrain import pretrain as run_pretrain
    from petctiqa.iqa.references import collect_references
    from petctiqa.protocol import load_dataset_protocol

    options = PretrainOptions(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        augment=augment,
        target=target,
    )
    prep = Preprocessing(size=crop, mode="crops", grid=2)
    if preset is not None:
        chosen = get_preset(preset)
        model_name = chosen.train["model_name"]
        # MS-IQA (paper) pretrains on 224-px native crops: Swin's input size.
        crops = chosen.preprocessing is not None and chosen.preprocessing.mode == "crops"
        prep = chosen.preprocessing if crops else Preprocessing(size=224, mode="crops", grid=1)
        if chosen.pretrain is not None:
            options = replace(chosen.pretrain, seed=seed, device=device)
    wanted = [p.strip() for p in patients.split(",") if p.strip()] if patients else None
    with echo_warnings():
        references = collect_references(sources, wanted, stride, protocol)
        click.echo(f"{len(references)} clean references; model {model_name}", err=True)
        chosen_protocol = load_dataset_protocol(protocol) if protocol else load_dataset_protocol()
        ranges = DistortionRanges.from_settings(chosen_protocol.distortions)
        result = run_pretrain(model_name, references, ranges, prep, out_dir, options)
    click.echo(
        f"pretrained {model_name} for {result.steps} steps (final loss {result.final_loss:.4f}, "
        f"{result.seconds:.0f} s): {result.output}"
    )
