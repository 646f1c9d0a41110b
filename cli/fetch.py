"""``petctiqa fetch``: download PET/CT studies of a TCIA collection (options -> library calls)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from petctiqa.errors import FetchError
from petctiqa.terminal import printable


@contextlib.contextmanager
def _advice_on_flags() -> Iterator[None]:
    """The library states the facts of an error; this adds what to do, in terms of flags."""
    from petctiqa.fetch import FolderLocked, SeriesDownloadsFailed  # lazy: as in fetch()

    try:
        yield
    except FolderLocked as exc:
        raise FetchError(f"{exc}; wait for it to finish or use another --out") from None
    except SeriesDownloadsFailed as exc:
        raise FetchError(f"{exc}; run the same command again to resume") from None


@click.command("fetch")
@click.option(
    "--collection",
    default="Lung-PET-CT-Dx",
    show_default=True,
    help="TCIA collection name.",
)
@click.option(
    "--patients",
    "n_patients",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Number of qualifying patients (sorted patient IDs; ignored with --patient-list).",
)
@click.option(
    "--patient-list",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Text file with one patient ID per line (# comments); fetch exactly these.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("lung-pet-ct-dx"),
    show_default=True,
    help="Output folder (NBIA Data Retriever layout + metadata.csv); re-running resumes.",
)
@click.option("--dry-run", is_flag=True, help="List what would be downloaded, download nothing.")
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=4,
    show_default=True,
    help="Parallel downloads.",
)
@click.option(
    "--retries",
    type=click.IntRange(1, 20),
    default=5,
    show_default=True,
    help="Attempts per request / series (exponential backoff 1, 2, 4 ... 30 s).",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0.1),
    default=120.0,
    show_default=True,
    help="Seconds without a byte from the server before a request is abandoned and retried "
    "(an interrupted series download resumes where the server allows).",
)
@click.option(
    "--base-url",
    envvar="PETCTIQA_TCIA_URL",
    show_envvar=True,
    help="NBIA REST API base URL  [default: TCIA's public v4 API]",
)
def fetch(
    collection: str,
    n_patients: int,
    patient_list: Path | None,
    out_dir: Path,
    dry_run: bool,
    workers: int,
    retries: int,
    read_timeout: float,
    base_url: str | None,
) -> None:
    """Download PET/CT studies (a PET series + its CT) from TCIA's public REST API.

    Per study, one PET (PT) series and the CT of the same frame of reference are fetched
    (checked on the DICOM headers after download). Series zips are downloaded in parallel,
    verified and unpacked into the NBIA Data Retriever layout, with a metadata.csv. Complete
    series are skipped, so re-running the command resumes an interrupted download.

    \b
    Examples:
      petctiqa fetch --collection Lung-PET-CT-Dx --patients 20 --out lung-pet-ct-dx/
      petctiqa fetch --patients 20 --out lung-pet-ct-dx/ --dry-run
      petctiqa fetch --patient-list patients.txt --out lung-pet-ct-dx/ --workers 8
      PETCTIQA_TCIA_URL=http://mirror:8080/nbia-api/services/v4/ petctiqa fetch --out d/
    \b
    Then:
      petctiqa build-dataset --src lung-pet-ct-dx/ --out ds/
    """
    # lazy: `petctiqa --help` imports this module; fetch pulls in pydicom and requests
    from petctiqa.fetch import describe_plan, execute_fetch, plan_fetch, read_patient_list
    from petctiqa.tcia_client import RetryPolicy, TciaClient

    patient_ids = read_patient_list(patient_list) if patient_list is not None else None
    with TciaClient(
        base_url, retry=RetryPolicy(attempts=retries), timeout_s=(15.0, read_timeout)
    ) as client:
        click.echo(printable(f"querying {client.base_url} for {collection} ..."), err=True)
        plan = plan_fetch(
            client,
            collection,
            out_dir,
            n_patients=None if patient_ids else n_patients,
            patient_ids=patient_ids,
            workers=workers,
        )
        for line in describe_plan(plan, details=dry_run):  # the server's IDs and descriptions
            click.echo(printable(line))
        if dry_run:
            click.echo("dry run: nothing downloaded (CT choices are verified after download)")
            return
        with _advice_on_flags():
            report = execute_fetch(
                client,
                plan,
                workers=workers,
                progress=True,
                log=lambda message: click.echo(printable(message), err=True),
            )
    click.echo(
        f"downloaded {report.downloaded_series} series "
        f"({report.downloaded_bytes / 1e6:.1f} MB), {report.reused_series} already complete; "
        f"{len(report.pairs)} PET/CT pair(s) of {len(report.patient_ids)} patient(s) in "
        f"{report.out_dir}"
    )
    click.echo(f"metadata: {report.metadata_csv}")
    if plan.target_patients is not None and len(report.patient_ids) < plan.target_patients:
        click.echo(
            f"warning: only {len(report.patient_ids)} of {plan.target_patients} requested "
            "patients have a verified PET/CT pair",
            err=True,
        )
