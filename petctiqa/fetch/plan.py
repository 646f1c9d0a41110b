"""Plan a fetch: query the archive's listings, choose the patients and their series, and size
the download (:func:`plan_fetch`), and describe the plan (:func:`describe_plan`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from petctiqa.errors import FetchError
from petctiqa.fetch.choose import PatientStudies, StudyPlan, patient_studies
from petctiqa.fetch.layout import series_directory
from petctiqa.fetch.local import looks_complete
from petctiqa.fetch.metadata import format_file_size
from petctiqa.fetch.records import SeriesRecords
from petctiqa.tcia_client import RemoteSeries, TciaClient


@dataclass(frozen=True)
class FetchPlan:
    """What :func:`petctiqa.fetch.run.execute_fetch` will download; built by :func:`plan_fetch`."""

    collection: str
    out_dir: Path
    patients: tuple[PatientStudies, ...]
    spare_patient_ids: tuple[str, ...]
    """Qualifying candidates not planned yet, in order (replacements; empty for a patient list)."""
    target_patients: int | None
    """Patients wanted (None: exactly the listed patients)."""
    download_bytes: Mapping[str, int] = field(default_factory=dict)
    """Series UID -> bytes, for the first-choice series not yet complete on disk."""
    complete_series: frozenset[str] = frozenset()
    """First-choice series that look complete on disk (recorded sizes, or instance count);
    every file is verified again when the plan runs."""

    @property
    def first_choice_series(self) -> tuple[RemoteSeries, ...]:
        """PET and first-ranked CT of every planned study, in plan order."""
        return tuple(
            s for p in self.patients for st in p.studies for s in (st.pet, st.ct_candidates[0])
        )

    @property
    def total_download_bytes(self) -> int:
        return sum(self.download_bytes.values())


@dataclass(frozen=True)
class PatientSearch:
    """Where a search for qualifying patients stands (:func:`find_patients`)."""

    found: list[PatientStudies]
    rejected: list[str]
    """Patients examined that do not qualify."""
    unexamined: list[str]
    """Candidates not examined, in order."""


def find_patients(
    client: TciaClient,
    collection: str,
    candidates: Sequence[str],
    need: int,
    pool: ThreadPoolExecutor,
    out_dir: Path,
    batch: int,
) -> PatientSearch:
    """Query candidates in order (``batch`` at a time, in parallel) until ``need`` qualify;
    CT candidates already on disk go first (:func:`_prefer_on_disk`)."""
    records = SeriesRecords(out_dir)
    found: list[PatientStudies] = []
    rejected: list[str] = []
    position = 0
    while len(found) < need and position < len(candidates):
        chunk = list(candidates[position : position + batch])
        listings = list(pool.map(lambda pid: client.series(collection, patient_id=pid), chunk))
        for offset, (pid, listing) in enumerate(zip(chunk, listings, strict=True)):
            if len(found) == need:
                return PatientSearch(found, rejected, list(candidates[position + offset :]))
            studies = patient_studies(pid, listing)
            if studies is None:
                rejected.append(pid)
            else:
                found.append(_prefer_on_disk(studies, out_dir, records))
        position += len(chunk)
    return PatientSearch(found, rejected, list(candidates[position:]))


def _prefer_on_disk(
    patient: PatientStudies, out_dir: Path, records: SeriesRecords
) -> PatientStudies:
    """Move CT candidates already on disk to the front (stable), so a resumed run re-uses the
    CT an earlier run verified instead of re-trying rejected candidates."""

    def on_disk(s: RemoteSeries) -> bool:
        # a record means an earlier run verified (and kept) this CT, even if it is damaged now
        return records.get(s.series_uid) is not None or looks_complete(out_dir, s, records)

    studies = tuple(
        StudyPlan(
            st.patient_id,
            st.study_uid,
            st.pet,
            tuple(sorted(st.ct_candidates, key=lambda s: not on_disk(s))),
        )
        for st in patient.studies
    )
    return PatientStudies(patient.patient_id, studies)


def series_bytes(client: TciaClient, series: RemoteSeries) -> int:
    """The listing's FileSize; ``getSeriesSize`` (one slow request per series) only when the
    listing has no size."""
    if series.file_size is not None:
        return series.file_size
    return client.series_size(series.series_uid).total_bytes


def plan_fetch(
    client: TciaClient,
    collection: str,
    out_dir: Path,
    *,
    n_patients: int | None = None,
    patient_ids: Sequence[str] | None = None,
    workers: int = 4,
) -> FetchPlan:
    """Query the archive and decide what to download.

    Without ``patient_ids``: the patients of ``collection`` that have a PT series, in sorted
    (string) order, are examined until ``n_patients`` have a study with a PET and a CT candidate.
    With ``patient_ids``: exactly those, each of which must qualify (else FetchError).
    """
    if patient_ids is None and (n_patients is None or n_patients < 1):
        raise FetchError(f"the number of patients must be at least 1, got {n_patients}")
    out_dir = Path(out_dir)
    batch = max(1, workers) * 2
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        if patient_ids is not None:
            search = _listed_patients(client, collection, patient_ids, pool, out_dir, batch)
            target = None
        else:
            candidates = _candidates_with_pet(client, collection)
            search = find_patients(client, collection, candidates, n_patients, pool, out_dir, batch)
            target = n_patients
        first_choice = [
            s for p in search.found for st in p.studies for s in (st.pet, st.ct_candidates[0])
        ]
        records = SeriesRecords(out_dir)
        complete = frozenset(
            s.series_uid for s in first_choice if looks_complete(out_dir, s, records)
        )
        missing = [s for s in first_choice if s.series_uid not in complete]
        sizes = dict(
            zip(
                (s.series_uid for s in missing),
                pool.map(lambda s: series_bytes(client, s), missing),
                strict=True,
            )
        )
    return FetchPlan(
        collection=collection,
        out_dir=out_dir,
        patients=tuple(search.found),
        spare_patient_ids=tuple(search.unexamined if target is not None else ()),
        target_patients=target,
        download_bytes=sizes,
        complete_series=complete,
    )


def _listed_patients(
    client: TciaClient,
    collection: str,
    patient_ids: Sequence[str],
    pool: ThreadPoolExecutor,
    out_dir: Path,
    batch: int,
) -> PatientSearch:
    """Every listed patient, each of which must qualify."""
    ids = list(patient_ids)
    search = find_patients(client, collection, ids, len(ids), pool, out_dir, batch)
    if search.rejected:
        more = len(search.rejected) - 1
        raise FetchError(
            f"patient {search.rejected[0]} has no study with both a PET (PT) and a CT series in "
            f"{collection} at {client.url('getSeries', {'Collection': collection})}"
            + (f" (and {more} more)" if more else "")
        )
    return search


def _candidates_with_pet(client: TciaClient, collection: str) -> list[str]:
    """The collection's patients that have a PT series, in sorted (string) order."""
    everyone = client.patients(collection)
    if not everyone:
        raise FetchError(
            f"collection {collection!r} has no patients at "
            f"{client.url('getPatient', {'Collection': collection})}"
        )
    with_pet = {s.patient_id for s in client.series(collection, modality="PT")}
    return sorted(set(everyone) & with_pet)


def describe_plan(plan: FetchPlan, details: bool = True) -> list[str]:
    """Human-readable lines: one per series (when ``details``), then the totals."""
    lines = []
    for patient in plan.patients if details else ():
        for study in patient.studies:
            lines.extend(_describe_study(plan, patient.patient_id, study))
    n_studies = sum(len(p.studies) for p in plan.patients)
    lines.append(
        f"{len(plan.patients)} patient(s), {n_studies} PET/CT stud(ies): "
        f"{len(plan.download_bytes)} series to download "
        f"({format_file_size(plan.total_download_bytes)}), "
        f"{len(plan.complete_series)} already complete"
    )
    if plan.target_patients is not None and len(plan.patients) < plan.target_patients:
        lines.append(
            f"only {len(plan.patients)} of the {plan.target_patients} requested patients qualify"
        )
    return lines


def _describe_study(plan: FetchPlan, patient_id: str, study: StudyPlan) -> list[str]:
    lines = [f"{patient_id}  study ...{study.study_uid[-12:]}"]
    for role, s in (("PET", study.pet), ("CT ", study.ct_candidates[0])):
        state = (
            "on disk"
            if s.series_uid in plan.complete_series
            else format_file_size(plan.download_bytes.get(s.series_uid, 0))
        )
        lines.append(
            f"  {role} {s.series_description or 'NA'!s:<32} {s.image_count:>5} images"
            f"  {state}  -> {series_directory(plan.out_dir, s).relative_to(plan.out_dir)}"
        )
    if len(study.ct_candidates) > 1:
        lines.append(
            f"      ({len(study.ct_candidates) - 1} more CT candidate(s) if the frame of "
            "reference does not match)"
        )
    return lines
