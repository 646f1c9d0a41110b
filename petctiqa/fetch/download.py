"""Download one series: the zip into the staging folder (resumed where the server allows),
verified and installed by :func:`petctiqa.fetch.local.install_series_zip`, with retries.

The staging folder ``<out>/.petctiqa-partial`` holds one ``<uid>.zip.part`` per series being
downloaded (plus the ETag it was sent with, for ``If-Range``) and the temporary folders of
installs. A run removes everything there but the partial zips when it starts, and at its end
keeps only the partial zips of series that failed, for the next run to resume.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path

from petctiqa.errors import FetchError
from petctiqa.fetch.layout import partial_zip_path, series_directory
from petctiqa.fetch.local import LocalSeries, SeriesCheckFailed, install_series_zip
from petctiqa.fetch.records import SeriesRecords
from petctiqa.tcia_client import RemoteSeries, TciaClient, TransientError, ZipDownload

_PART_SUFFIXES = (".zip.part", ".zip.part.validator")


def download_series(
    client: TciaClient,
    series: RemoteSeries,
    out_dir: Path,
    on_bytes: Callable[[int], None] | None = None,
    *,
    records: SeriesRecords | None = None,
    log: Callable[[str], None] | None = None,
) -> LocalSeries:
    """Download, verify and install one series, retrying failures per ``client.retry``.

    An interrupted download continues where it stopped when the server honours HTTP Range
    (also across runs: the partial zip stays in the staging folder); otherwise it starts over
    and ``log`` says so. ``on_bytes`` follows the size of the partial zip (negative when bytes
    are discarded).
    """
    say = log or (lambda message: None)
    part = partial_zip_path(out_dir, series.series_uid)
    part.parent.mkdir(parents=True, exist_ok=True)
    final_dir = series_directory(out_dir, series)
    tally = _PartTally(on_bytes)
    tally.resync(part)  # a partial zip left by an earlier run counts as received
    policy = client.retry
    last: Exception | None = None
    for attempt in range(policy.attempts):
        try:
            result = client.download_series_zip(series.series_uid, part, tally.add)
            tally.resync(part)
            _say_resume(say, series, result)
            local = install_series_zip(part, series, final_dir, part.parent, records)
            _discard_part(part)
            return local
        except TransientError as exc:
            last = exc  # what arrived stays in the partial zip for the next attempt
        except SeriesCheckFailed as exc:
            last = exc
            _discard_part(part)  # bad bytes: the next attempt starts from zero
        tally.resync(part)
        if attempt + 1 < policy.attempts:
            client.sleep(policy.delay_s(attempt))
    raise FetchError(
        f"series {series.series_uid} ({series.patient_id}, {series.modality}) failed "
        f"{policy.attempts} attempts; last: {last}"
    )


class _PartTally:
    """Reports the size of a series' partial zip to ``on_bytes`` as deltas: bytes as they
    arrive, and a correction when bytes are discarded (a restart, a failed check)."""

    def __init__(self, on_bytes: Callable[[int], None] | None) -> None:
        self.on_bytes = on_bytes
        self.held = 0

    def add(self, n: int) -> None:
        self.held += n
        if self.on_bytes is not None:
            self.on_bytes(n)

    def resync(self, part: Path) -> None:
        size = part.stat().st_size if part.is_file() else 0
        if size != self.held:
            self.add(size - self.held)


def _say_resume(say: Callable[[str], None], series: RemoteSeries, result: ZipDownload) -> None:
    if result.resumed_from:
        say(f"series {series.series_uid}: resumed at byte {result.resumed_from}")
    elif result.discarded:
        say(
            f"series {series.series_uid}: the server does not resume downloads (no answer to "
            f"an HTTP Range request); restarted from zero, {result.discarded} bytes discarded"
        )


def _discard_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".validator").unlink(missing_ok=True)


def clean_staging(staging: Path) -> None:
    """Remove what an interrupted run left in the staging folder except the partial zips
    (and their validators), which a resumed download continues."""
    _prune(staging, keep=lambda entry: entry.name.endswith(_PART_SUFFIXES))


def finish_staging(staging: Path, keep_uids: set[str]) -> None:
    """At the end of a run keep only the partial zips of ``keep_uids`` (series that failed:
    the next run resumes them); remove the staging folder when nothing is left."""
    keep_parts = {partial_zip_path(staging.parent, uid).name for uid in keep_uids}
    _prune(staging, keep=lambda entry: entry.name.removesuffix(".validator") in keep_parts)
    with contextlib.suppress(OSError):
        staging.rmdir()


def _prune(staging: Path, keep: Callable[[Path], bool]) -> None:
    if not staging.is_dir():
        return
    for entry in staging.iterdir():
        if entry.is_file() and not entry.is_symlink() and keep(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
