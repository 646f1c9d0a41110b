"""``petctiqa phantom``: write the built-in synthetic thorax PET/CT phantom as DICOM."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("phantom")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the NBIA-style DICOM tree into (created if missing).",
)
@click.option(
    "--patients", default=20, show_default=True, type=click.IntRange(min=1), help="Patients."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the anatomy.")
@click.option(
    "--jobs",
    default=None,
    type=click.IntRange(min=1),
    help="Worker processes (default: all cores). Output does not depend on it.",
)
def phantom(out_dir: Path, patients: int, seed: int, jobs: int | None) -> None:
    """Write synthetic thorax FDG PET/CT studies as real DICOM files.

    Each patient gets one study with a CT series (512x512, HU, 5 mm slices) and a PET series
    (128x128 at 4.69 mm, Bq/ml with the SUV tags, 3.27 mm slices) sharing the frame of
    reference, in the NBIA Data Retriever layout, plus metadata.csv. The same seed always
    gives byte-identical files.

    \b
    Examples:
      petctiqa phantom --out phantom/                  # 20 patients, seed 0
      petctiqa phantom --out phantom/ --patients 3 --seed 7
      petctiqa inspect phantom/                        # what was written
      petctiqa build-dataset --src phantom/ --out ds/
    """
    from petctiqa.phantom import write_phantom_tree  # lazy: --help must not import SciPy

    studies = write_phantom_tree(out_dir, patients=patients, seed=seed, progress=True, jobs=jobs)
    n_files = sum(len(s.ct_files) + len(s.pet_files) for s in studies)
    size = sum(f.stat().st_size for s in studies for f in (*s.ct_files, *s.pet_files))
    for study in studies:
        click.echo(
            f"{study.patient_id}: CT {len(study.ct_files)} slices, PET {len(study.pet_files)} "
            f"slices, {len(study.lesions)} lesion(s) -> {study.ct_dir.parent}"
        )
    click.echo(
        f"wrote {len(studies)} phantom PET/CT studies ({n_files} DICOM files, "
        f"{size / 1e6:.0f} MB, seed {seed}) and metadata.csv to {out_dir}"
    )
