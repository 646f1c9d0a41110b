"""``petctiqa build-dataset``: options -> :func:`petctiqa.dataset.build.build_dataset`."""

from __future__ import annotations

from pathlib import Path

import click

from petctiqa.errors import DatasetError
from petctiqa.terminal import printable


@click.command(name="build-dataset")
@click.option(
    "--src",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="DICOM tree (e.g. a Lung-PET-CT-Dx download). Default: the built-in synthetic phantom, "
    "generated once into the phantom cache (see --phantom-cache), outside OUT.",
)
@click.option(
    "--phantom-cache",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder that keeps the built-in phantom's DICOM (569 MB for 20 patients) between "
    "builds [default: $PETCTIQA_PHANTOM_CACHE, else $XDG_CACHE_HOME/petctiqa, else "
    "~/.cache/petctiqa]. Unused with --src.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("petctiqa-dataset"),
    show_default=True,
    help="Output folder; rerunning the same command resumes or verifies it.",
)
@click.option(
    "--protocol",
    default="pet-ct-iqa-ds",
    show_default=True,
    help="Shipped protocol name (pet-ct-iqa-ds, pet-ct-iqa-ds-shot, pet-ct-lowdose, "
    "pet-ct-iqa-ds-continuous) or path to a TOML file.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes [default: all cores]. Output does not depend on it.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Dataset seed.")
@click.option(
    "--patients",
    type=click.IntRange(min=1),
    default=None,
    help="Number of patients [default: from the protocol, 20].",
)
@click.option(
    "--slices",
    type=click.IntRange(min=1),
    default=None,
    help="Slices per patient [default: from the protocol, 5].",
)
@click.option(
    "--format",
    "image_format",
    type=click.Choice(["jpeg", "png"]),
    default=None,
    help="Image file format [default: from the protocol, jpeg]. png stores the JPEG-degraded "
    "pixels losslessly.",
)
@click.option(
    "--patient-list",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Text file of patient IDs (one per line) to use instead of the seeded choice.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def build_dataset(
    src: Path | None,
    phantom_cache: Path | None,
    out_dir: Path,
    protocol: str,
    jobs: int | None,
    seed: int,
    patients: int | None,
    slices: int | None,
    image_format: str | None,
    patient_list: Path | None,
    quiet: bool,
) -> None:
    """Build the PET-CT-IQA-DS image set: N patients x K slices x 27 distortions.

    Writes OUT/images/, OUT/references/ (undistorted renders; OUT/renders/: the renders after
    a protocol's PET/CT-domain distortions), OUT/sheets/ (one 3x9 contact
    sheet per slice; OUT/sheets/crops/: the same grid of 1:1 crops of the image centre),
    OUT/manifest.csv, OUT/split.csv and OUT/dataset.json. Without --src the phantom's DICOM
    is generated once into a cache folder outside OUT (stderr says where). Output is
    byte-identical for any --jobs; an interrupted build resumes where it stopped (finished
    images are verified by sha256 and skipped). Exit status 0 only when the set is complete.

    \b
    Examples:
      petctiqa build-dataset                                   # built-in phantom, 2,700 images
      petctiqa build-dataset --src lung-pet-ct-dx/ --out ds/
      petctiqa build-dataset --src lung-pet-ct-dx/ --out ds-shot/ --protocol pet-ct-iqa-ds-shot
      petctiqa build-dataset --out small/ --patients 2 --slices 2 --jobs 2 --format png
      petctiqa build-dataset --out lowdose/ --protocol pet-ct-lowdose --patients 2 --slices 2
      petctiqa build-dataset --src dicom/ --out ds/ --protocol my-protocol.toml --seed 7
    """
    # lazy: `petctiqa --help` imports this module; the build pulls in pydicom, SciPy, OpenCV
    from petctiqa.dataset.build import BuildOptions
    from petctiqa.dataset.build import build_dataset as run_build
    from petctiqa.dataset.candidates import TooFewPatients
    from petctiqa.dataset.resume import OutputInUse
    from petctiqa.dataset.select import read_patient_list
    from petctiqa.protocol import load_dataset_protocol

    def log(message: str) -> None:  # messages quote DICOM text (IDs, descriptions)
        click.echo(printable(message, keep_newlines=True), err=True)

    options = BuildOptions(
        out_dir=out_dir,
        protocol=load_dataset_protocol(protocol),
        src=src,
        phantom_cache=phantom_cache,
        seed=seed,
        jobs=jobs,
        patients=patients,
        slices=slices,
        image_format=image_format,
        patient_list=tuple(read_patient_list(patient_list)) if patient_list else None,
        progress=not quiet,
    )
    try:
        summary = run_build(options, log=log)
    except TooFewPatients as exc:
        raise DatasetError(f"{exc} (use --patients {exc.available})") from None
    except OutputInUse as exc:
        raise DatasetError(f"{exc}; use another --out") from None
    click.echo(
        f"dataset complete: {summary.images} images ({len(summary.patients)} patients x "
        f"{summary.slices // max(len(summary.patients), 1)} slices x "
        f"{summary.images // max(summary.slices, 1)}) in {summary.out_dir} "
        f"[{summary.images_written} written, {summary.images_verified} verified, "
        f"{summary.seconds:.1f} s]"
    )
    for item in summary.substitutions:
        click.echo(
            printable(f"patient {item.used} used instead of {item.instead_of} ({item.reason})")
        )
