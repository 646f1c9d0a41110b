"""Run a fetch plan: download (or re-use) each study's PET and CT, verify the pair, replace a
patient left without a pair, write ``metadata.csv`` (:func:`execute_fetch`).

The run works in rounds: every pending study's PET and current CT candidate are obtained in
parallel (re-used when complete on disk, else downloaded); then each pending study's pair is
checked on the headers; a CT that is not the PET's is deleted and the study moves to its next
candidate; a study out of candidates is dropped with its PET, and without a patient list the
next qualifying patient takes the place of a patient left with no pair.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from petctiqa.errors import FetchError
from petctiqa.fetch.choose import StudyPlan
from petctiqa.fetch.download import clean_staging, download_series, finish_staging
from petctiqa.fetch.layout import PARTIAL_DIR_NAME
from petctiqa.fetch.local import LocalSeries, pairing_problem, scan_complete_series
from petctiqa.fetch.metadata import metadata_row, write_metadata_csv
from petctiqa.fetch.plan import FetchPlan, find_patients, series_bytes
from petctiqa.fetch.records import SeriesRecords
from petctiqa.tcia_client import RemoteSeries, TciaClient

LOCK_FILE_NAME = ".petctiqa-fetch.lock"


class FolderLocked(FetchError):
    """Another fetch holds the output folder's lock."""


class SeriesDownloadsFailed(FetchError):
    """Some series could not be downloaded; the complete pairs are on disk and in metadata.csv
    (``report``)."""

    def __init__(self, message: str, report: FetchReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class FetchedPair:
    patient_id: str
    study_uid: str
    pet: LocalSeries
    ct: LocalSeries


@dataclass(frozen=True)
class FetchReport:
    out_dir: Path
    metadata_csv: Path
    pairs: tuple[FetchedPair, ...]
    """Verified PET/CT pairs on disk, sorted by (patient_id, study_uid)."""
    downloaded_series: int
    reused_series: int
    """Series that were already complete on disk."""
    downloaded_bytes: int
    rejected_ct: tuple[tuple[str, str], ...]
    """(CT series UID, reason) of CT candidates that did not match their PET."""
    unpaired_patients: tuple[str, ...]
    """Patients dropped because no CT candidate matched the PET's frame of reference."""

    @property
    def patient_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.patient_id for p in self.pairs))


@contextlib.contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` for one fetch run (POSIX ``flock``; a no-op where
    ``fcntl`` is missing). A second run on the same folder fails at once with FolderLocked
    instead of deleting the first run's downloads in progress. The lock file is removed on exit.
    """
    try:
        import fcntl  # lazy: POSIX only; fetch still runs where it is missing
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE_NAME
    while True:
        handle = open(path, "a+b")  # noqa: SIM115 - held open for the whole run
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise FolderLocked(
                f"{out_dir}: another petctiqa fetch is writing to this folder (lock {path})"
            ) from None
        try:  # the previous holder may have removed the file after we opened it: retry then
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        handle.close()


def execute_fetch(
    client: TciaClient,
    plan: FetchPlan,
    *,
    workers: int = 4,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> FetchReport:
    """Download what ``plan`` lists (see the module doc) and write metadata.csv.

    ``workers`` bounds parallel downloads. Raises SeriesDownloadsFailed after writing
    metadata.csv for the complete pairs when any series could not be downloaded; running again
    resumes. The output folder is locked for the run (:func:`output_lock`).
    """
    with output_lock(Path(plan.out_dir)):
        run = _FetchRun(client, plan, max(1, workers), log or (lambda message: None))
        with _ByteProgress(plan.total_download_bytes, progress) as meter:
            run.download_all(meter)
        return run.finish(meter.downloaded)


@dataclass
class _StudyState:
    plan: StudyPlan
    ct_index: int = 0
    status: str = "pending"  # pending | paired | unpaired | failed

    @property
    def ct(self) -> RemoteSeries:
        return self.plan.ct_candidates[self.ct_index]


class _ByteProgress:
    """The download progress bar (bytes of the server's series sizes) and the byte count."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._lock = threading.Lock()
        self.downloaded = 0
        self._bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="fetch",
            disable=not enabled,
            file=sys.stderr,
        )

    def __enter__(self) -> _ByteProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.close()

    def add_total(self, n: int) -> None:
        with self._lock:
            self._bar.total = (self._bar.total or 0) + n
            self._bar.refresh()

    def series_meter(self, expected: int) -> _SeriesMeter:
        return _SeriesMeter(self, expected)

    def _credit(self, n: int, credit: int) -> None:
        with self._lock:
            self.downloaded += n
            self._bar.update(credit)


class _SeriesMeter:
    """The byte callback of one series download. The bar shows the server's series size: zip
    overhead or compression must not push it past 100 %, so the credit per series is clamped
    to [0, expected]; :meth:`done` credits the rest."""

    def __init__(self, progress: _ByteProgress, expected: int) -> None:
        self.progress, self.expected, self.received = progress, expected, 0

    def _clamped(self, value: int) -> int:
        return min(max(value, 0), self.expected)

    def __call__(self, n: int) -> None:
        credit = self._clamped(self.received + n) - self._clamped(self.received)
        self.received += n
        self.progress._credit(n, credit)

    def done(self) -> None:
        self.progress._credit(0, self.expected - self._clamped(self.received))


class _FetchRun:
    """The state of one :func:`execute_fetch` run (see the module doc for the rounds)."""

    def __init__(
        self, client: TciaClient, plan: FetchPlan, workers: int, say: Callable[[str], None]
    ) -> None:
        self.client, self.plan, self.workers, self.say = client, plan, workers, say
        self.out_dir = Path(plan.out_dir)
        self.staging = self.out_dir / PARTIAL_DIR_NAME
        clean_staging(self.staging)  # an interrupted run's leftovers, partial zips kept
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.records = SeriesRecords(self.out_dir)
        self.states = [_StudyState(st) for patient in plan.patients for st in patient.studies]
        self.spare = list(plan.spare_patient_ids)
        self.local: dict[str, LocalSeries] = {}
        self.errors: dict[str, str] = {}
        self.rejected: list[tuple[str, str]] = []
        self.unpaired: list[str] = []

    def download_all(self, meter: _ByteProgress) -> None:
        try:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                while any(st.status == "pending" for st in self.states):
                    self._obtain_round(pool, meter)
                    self._check_pairs()
                    self._account_unpaired(pool)
        finally:
            finish_staging(self.staging, keep_uids=set(self.errors))

    def _obtain_round(self, pool: ThreadPoolExecutor, meter: _ByteProgress) -> None:
        """Obtain the PET and current CT candidate of every pending study, in parallel."""
        wanted = {
            s.series_uid: s
            for st in self.states
            if st.status == "pending"
            for s in (st.plan.pet, st.ct)
            if s.series_uid not in self.local and s.series_uid not in self.errors
        }
        futures = {uid: pool.submit(self._obtain, s, meter) for uid, s in wanted.items()}
        for uid, future in futures.items():
            try:
                self.local[uid] = future.result()
            except FetchError as exc:
                self.errors[uid] = str(exc)

    def _obtain(self, series: RemoteSeries, meter: _ByteProgress) -> LocalSeries:
        """The series complete on disk (verified against its record), else downloaded."""
        existing, problem = scan_complete_series(self.out_dir, series, self.records)
        if existing is not None:
            return existing
        if problem is not None:
            self.say(
                f"{series.patient_id}: series {series.series_uid} on disk is damaged "
                f"({problem}); downloading it again"
            )
        expected = self.plan.download_bytes.get(series.series_uid)
        if expected is None:
            expected = series_bytes(self.client, series)
            meter.add_total(expected)
        series_meter = meter.series_meter(expected)
        local = download_series(
            self.client, series, self.out_dir, series_meter, records=self.records, log=self.say
        )
        series_meter.done()
        return local

    def _check_pairs(self) -> None:
        """Verify each pending study's pair; move a study whose CT does not match on."""
        for st in self.states:
            if st.status != "pending":
                continue
            pet_uid, ct_uid = st.plan.pet.series_uid, st.ct.series_uid
            if pet_uid in self.errors or ct_uid in self.errors:
                st.status = "failed"
                continue
            problem = pairing_problem(self.local[pet_uid], self.local[ct_uid])
            if problem is None:
                st.status = "paired"
                continue
            self.say(
                f"{st.plan.patient_id}: CT '{st.ct.series_description}' is not the PET's "
                f"CT ({problem}); trying the next candidate"
            )
            self.rejected.append((ct_uid, problem))
            self._discard(st.ct)
            st.ct_index += 1
            if st.ct_index == len(st.plan.ct_candidates):
                st.status = "unpaired"
                self._discard(st.plan.pet)

    def _discard(self, series: RemoteSeries) -> None:
        """Delete a series this run downloaded and no study uses (kept when it was on disk)."""
        item = self.local.pop(series.series_uid, None)
        if item is not None and item.downloaded:
            self.records.drop(series.series_uid)
            shutil.rmtree(item.directory, ignore_errors=True)
            _remove_empty_parents(item.directory.parent, self.out_dir)

    def _account_unpaired(self, pool: ThreadPoolExecutor) -> None:
        """Note patients left without a pair; without a patient list, plan replacements."""
        target = self.plan.target_patients
        if target is None:
            for st in self.states:
                if st.status == "unpaired" and st.plan.patient_id not in self.unpaired:
                    self.unpaired.append(st.plan.patient_id)
            return
        by_patient: dict[str, set[str]] = {}
        for st in self.states:
            by_patient.setdefault(st.plan.patient_id, set()).add(st.status)
        dropped = [p for p, statuses in by_patient.items() if statuses == {"unpaired"}]
        for pid in dropped:
            if pid not in self.unpaired:
                self.unpaired.append(pid)
                self.say(f"{pid}: no CT matches the PET's frame of reference; dropped")
        self._replace(target - (len(by_patient) - len(dropped)), pool)

    def _replace(self, missing: int, pool: ThreadPoolExecutor) -> None:
        if missing <= 0 or not self.spare:
            return
        search = find_patients(
            self.client,
            self.plan.collection,
            self.spare,
            missing,
            pool,
            self.out_dir,
            self.workers * 2,
        )
        self.spare = search.unexamined
        for patient in search.found:
            self.say(f"{patient.patient_id}: added in place of a dropped patient")
            self.states.extend(_StudyState(study) for study in patient.studies)

    def finish(self, downloaded_bytes: int) -> FetchReport:
        """Write metadata.csv for the verified pairs; the report (SeriesDownloadsFailed when a
        series could not be downloaded)."""
        pairs = tuple(
            sorted(
                (
                    FetchedPair(
                        st.plan.patient_id,
                        st.plan.study_uid,
                        self.local[st.plan.pet.series_uid],
                        self.local[st.ct.series_uid],
                    )
                    for st in self.states
                    if st.status == "paired"
                ),
                key=lambda p: (p.patient_id, p.study_uid),
            )
        )
        used = [s for pair in pairs for s in (pair.pet, pair.ct)]
        report = FetchReport(
            out_dir=self.out_dir,
            metadata_csv=write_metadata_csv(
                self.out_dir, [metadata_row(s, self.out_dir) for s in used]
            ),
            pairs=pairs,
            downloaded_series=sum(1 for s in self.local.values() if s.downloaded),
            reused_series=sum(1 for s in used if not s.downloaded),
            downloaded_bytes=downloaded_bytes,
            rejected_ct=tuple(self.rejected),
            unpaired_patients=tuple(self.unpaired),
        )
        if self.errors:
            first_error = next(iter(self.errors.values()))
            raise SeriesDownloadsFailed(
                f"{len(self.errors)} series could not be downloaded (first: {first_error}); "
                f"{len(pairs)} complete PET/CT pair(s) are in {self.out_dir} and metadata.csv",
                report,
            )
        return report


def _remove_empty_parents(directory: Path, stop: Path) -> None:
    """Remove ``directory`` and its parents up to (not including) ``stop`` while empty."""
    with contextlib.suppress(OSError):
        while directory != stop and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
            directory = directory.parent
