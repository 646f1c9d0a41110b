"""``petctiqa inspect DIR``: list what a DICOM tree holds."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from petctiqa.terminal import printable


@click.command(name="inspect")
@click.argument(
    "directory",
    metavar="DIR",
    type=click.Path(file_okay=False, dir_okay=True, path_type=Path),
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for scripts).")
def inspect_dicom(directory: Path, as_json: bool) -> None:
    """List the patients, studies, series, PET/CT pairs and PET SUVs under DIR.

    Reads headers only (plus PET pixels for SUVmax). Shows each series' modality, slice
    count, matrix, spacing (row x column x slice, mm) and units, the PET/CT pairs found
    (same study and frame of reference, overlapping z range), per PET series the body-weight
    SUV factor and SUVmax, and which files were skipped and why. Run it first on a fresh
    download. Exits with status 2 when DIR holds no DICOM image series.

    \b
    Examples:
      petctiqa inspect lung-pet-ct-dx/
      petctiqa inspect lung-pet-ct-dx/Lung_Dx-A0001/
      petctiqa inspect --json lung-pet-ct-dx/ > inventory.json
    """
    # lazy: `petctiqa --help` imports this module; inspect pulls in pydicom and NumPy
    from petctiqa.dicom.inspect import (
        build_inspect_report,
        format_inspect_text,
        inspect_report_to_json,
    )

    report = build_inspect_report(directory, progress=sys.stderr.isatty())
    if as_json:
        import json  # lazy: only --json needs it, and `petctiqa --help` imports this module

        click.echo(json.dumps(inspect_report_to_json(report), indent=2))
    else:
        click.echo(printable(format_inspect_text(report), keep_newlines=True), nl=False)
