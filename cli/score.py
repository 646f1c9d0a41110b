"""``petctiqa score``: predict quality (0..4) for images with an MS-IQA checkpoint."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("score")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(path_type=Path),
    help="A checkpoint written by `petctiqa train` (best.pt).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write scores to a .csv or .json file (atomic).",
)
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])
)
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option(
    "--slice-stride",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="For DICOM PET/CT folders: score every N-th CT slice in the PET overlap.",
)
@click.option(
    "--protocol",
    default=None,
    help="Dataset protocol (shipped name or TOML) to render DICOM studies with "
    "[default: the one stored in the checkpoint, else pet-ct-iqa-ds]; warns when it renders "
    "differently from the checkpoint's.",
)
def score(
    images: tuple[Path, ...],
    checkpoint: Path,
    out_path: Path | None,
    device: str,
    batch_size: int,
    slice_stride: int,
    protocol: str | None,
) -> None:
    """Score PNG/JPEG/TIFF images, image folders or DICOM PET/CT study folders.

    \b
    Examples:
      petctiqa score image.png --checkpoint run/best.pt
      petctiqa score ds/images/ --checkpoint run/best.pt --out scores.csv
      petctiqa score study_dicom/ --checkpoint run/best.pt --slice-stride 10 --out s.json
      petctiqa score study_dicom/ --checkpoint run/best.pt --protocol pet-ct-iqa-ds-shot

    Inputs get the checkpoint's stored preprocessing; DICOM slices are rendered with the render
    settings stored in the checkpoint unless --protocol is given.
    """
    from petctiqa.iqa.score import Scorer, write_scores
    from petctiqa_cli._common import echo_warnings

    with echo_warnings():
        scorer = Scorer(checkpoint, device, protocol=protocol)
        records = scorer.score(
            list(images), batch_size=batch_size, slice_stride=slice_stride, progress=True
        )
    if out_path is not None:
        write_scores(out_path, records)
        click.echo(f"{len(records)} scores written to {out_path}", err=True)
    for record in records:
        click.echo(f"{record.score:.4f}\t{record.source}")
