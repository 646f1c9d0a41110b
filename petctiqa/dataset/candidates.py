"""Which patients of a DICOM source a build may take, in which order, and why others are not.

:func:`scan_source` indexes the tree and pairs PET with CT; :func:`choose_candidates` gives
each patient its best usable pair (falling back to another pair of the same patient when the
best PET cannot be converted to SUV) and orders every patient that has a PET series (usable or
not) by the dataset seed or an explicit list. The build takes the first N usable patients of
that order: a patient that cannot be used is named with its reason, and the build's summary
says which patient replaced it (:func:`substitutions`). Ordering all patients with a PET
series, not only the usable ones, keeps the seeded choice of the others unchanged when one
patient breaks.

Messages state facts; the CLI words the advice (see ``cli/build_dataset.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from petctiqa.dataset.select import order_candidates, pairs_by_preference
from petctiqa.dicom.diagnose import (
    DAMAGE_REASONS,
    BrokenSeries,
    SeriesProblem,
    broken_series,
    patients_without_pair,
    pet_suv_problem,
    unused_pet_series,
)
from petctiqa.dicom.index import (
    SPECIAL_FILE_REASONS,
    describe_skipped,
    index_dicom_tree,
    is_nbia_metadata,
)
from petctiqa.dicom.pairing import PetCtPair, find_pet_ct_pairs
from petctiqa.dicom.records import SkippedFile, series_label
from petctiqa.errors import DatasetError, DicomError

Log = Callable[[str], None]


class TooFewPatients(DatasetError):
    """The source has fewer patients with a usable PET/CT pair than requested."""

    def __init__(self, message: str, available: int) -> None:
        super().__init__(message)
        self.available = available


@dataclass(frozen=True)
class SourceScan:
    """What the build needs to know about a DICOM tree."""

    pairs: list[PetCtPair]
    damaged: list[SkippedFile]
    """Truncated or unreadable files (an error when beside a series the build uses)."""
    broken: list[BrokenSeries]
    without_pair: dict[str, SeriesProblem]
    """Every patient without a PET/CT pair, with the reason."""
    unused_pets: list[SeriesProblem]
    """PET series left out although their patient has a pair."""
    pet_patients: frozenset[str]
    """Patients with a PET series (PT, or NM: a PET relabelled NM is reported, not skipped)."""


def _log_skipped_files(index, src: Path, log: Log) -> None:
    # the metadata.csv of an NBIA download is expected: listed by `inspect`, not reported here
    reported = [s for s in index.skipped if not is_nbia_metadata(s)]
    if reported:
        noun = "file" if len(reported) == 1 else "files"
        log(f"skipped {len(reported)} {noun} in {src}: {describe_skipped(reported, src)}")
    for item in index.skipped:  # never opened: one line each, so none goes unnoticed
        if item.reason.startswith(SPECIAL_FILE_REASONS):
            log(f"skipped {item.path}: {item.reason}")


def scan_source(src: Path, progress: bool, log: Log) -> SourceScan:
    """All PET/CT pairs under ``src``, the damaged files the index skipped, the series they
    break and every patient or PET series without a pair (with the reason)."""
    if not src.is_dir():
        raise DatasetError(f"{src}: source folder not found")
    index = index_dicom_tree(src, progress=progress)
    _log_skipped_files(index, src, log)
    damaged = [s for s in index.skipped if s.reason.startswith(DAMAGE_REASONS)]
    if not index.series:
        raise DatasetError(
            f"{src}: no DICOM image series found ({len(index.skipped)} files skipped)"
        )
    broken = broken_series(index)
    pairs = find_pet_ct_pairs(index)
    without_pair = patients_without_pair(index, pairs)
    if not pairs:
        modalities = sorted({s.modality for s in index.series})
        if "PT" not in modalities and "NM" not in modalities:
            raise DatasetError(
                f"{src}: no PET series (Modality PT) found; series present: {', '.join(modalities)}"
            )
        first = next(iter(without_pair.values()))
        if broken:
            raise DicomError(f"{broken[0].describe()}; {src} has no usable PET/CT pair")
        if damaged:
            raise DicomError(
                f"{damaged[0].path}: {damaged[0].reason}; {src} has no usable PET/CT pair "
                f"({first.describe()})"
            )
        raise DatasetError(f"{src}: no usable PET/CT pair ({first.describe()})")
    pet_patients = frozenset(s.patient_id for s in index.series if s.modality in ("PT", "NM"))
    return SourceScan(
        pairs, damaged, broken, without_pair, unused_pet_series(index, pairs), pet_patients
    )


def check_series_intact(pair: PetCtPair, damaged: list[SkippedFile]) -> None:
    """Refuse a pair when a damaged file sits in the folder of its CT or PET series."""
    folders = {f.parent for f in (*pair.ct.files, *pair.pet.files)}
    for item in damaged:
        if item.path.parent in folders:
            raise DicomError(
                f"{item.path}: {item.reason} (beside the PET/CT series of patient "
                f"{pair.patient_id})"
            )


def usable_pair(ranked: Sequence[PetCtPair], log: Log) -> PetCtPair:
    """The first of a patient's pairs (best first) whose PET converts to SUV; with one pair,
    that pair unchecked (loading it reports any problem). With none converting, the best."""
    if len(ranked) == 1:
        return ranked[0]
    problems = []
    for pair in ranked:
        problem = pet_suv_problem(pair.pet)
        if problem is None:
            for text in problems:
                log(
                    f"warning: patient {pair.patient_id}: {text}; using the PET/CT pair of the "
                    f"{series_label(pair.pet)} instead"
                )
            return pair
        problems.append(problem)
    return ranked[0]


@dataclass(frozen=True)
class Candidates:
    """The patients a build may take, in the order they are tried."""

    pairs: dict[str, PetCtPair]
    """Each usable patient's PET/CT pair."""
    order: list[str]
    """Every patient with a PET series, in the order they are tried (usable or not)."""
    problems: dict[str, str]
    """Why a patient of ``order`` without a pair cannot be used (one line, naming the patient,
    series, file and reason)."""


def _log_problems(scan: SourceScan, lost: dict[str, BrokenSeries], pairs, log: Log) -> None:
    for item in scan.broken:
        pid = item.series.patient_id
        fate = "uses another PET/CT pair" if pid in pairs else "is left out"
        log(f"warning: {item.describe()}; patient {pid} {fate}")
    for pid, problem in scan.without_pair.items():
        if pid not in lost:
            log(f"warning: {problem.describe()}; the patient is left out")
    for problem in scan.unused_pets:
        pair = pairs[problem.patient_id]
        log(
            f"warning: {problem.describe()}; the patient's PET/CT pair is the "
            f"{series_label(pair.pet)}"
        )


def choose_candidates(
    src: Path,
    scan: SourceScan,
    seed: int,
    patient_list: Sequence[str] | None,
    n_patients: int,
    log: Log,
) -> Candidates:
    """Each patient's pair and the order patients are tried in (see the module docstring);
    refuses too few usable patients, a damaged file beside the series of a patient the build
    needs, and damaged files that cost such a patient its only PET/CT pair."""
    pairs = {
        pid: usable_pair(ranked, log) for pid, ranked in pairs_by_preference(scan.pairs).items()
    }
    # patients whose only pair a damaged file broke: an error when the build would take them
    lost: dict[str, BrokenSeries] = {}
    for item in scan.broken:
        if item.series.patient_id not in pairs:
            lost.setdefault(item.series.patient_id, item)
    problems = {pid: p.describe() for pid, p in scan.without_pair.items()}
    if len(pairs) < n_patients:
        problem = f"{len(pairs)} patients have a PET/CT pair, {n_patients} requested"
        if lost:
            raise DicomError(f"{next(iter(lost.values())).describe()}; {src}: {problem}")
        first = next(iter(problems.values()), None)
        why = f"; left out: {first}" if first else ""
        raise TooFewPatients(f"{src}: {problem}{why}", len(pairs))
    everyone = sorted(set(pairs) | (scan.pet_patients & set(problems)) | set(lost))
    order = order_candidates(everyone, seed, patient_list)
    # a listed patient is always needed; a seeded order takes the first N usable ones
    for pid in order if patient_list is not None else order[:n_patients]:
        if pid in lost:
            raise DicomError(
                f"{lost[pid].describe()}; patient {pid} has no other usable PET/CT pair"
            )
        if patient_list is not None and pid not in pairs:
            raise DatasetError(f"the patient list names a patient without a usable PET/CT "
                               f"pair: {problems[pid]}")  # fmt: skip
    _log_problems(scan, lost, pairs, log)
    for pid in [p for p in order if p in pairs][:n_patients]:
        check_series_intact(pairs[pid], scan.damaged)
    return Candidates(pairs, order, problems)


@dataclass(frozen=True)
class Substitution:
    """A patient the build took because one earlier in the order could not be used."""

    used: str
    instead_of: str
    reason: str
    """Why ``instead_of`` was not used (one line)."""


def substitutions(
    order: Sequence[str], n_patients: int, used: Sequence[str], reasons: dict[str, str]
) -> tuple[Substitution, ...]:
    """Which used patients replaced which of the first ``n_patients`` of ``order``, in order.

    ``used``: the patients built; ``reasons``: why each patient passed over was not used."""
    intended = list(order[:n_patients])
    rank = {pid: i for i, pid in enumerate(order)}
    replaced = [pid for pid in intended if pid not in set(used)]
    extra = sorted((pid for pid in used if pid not in set(intended)), key=rank.__getitem__)
    return tuple(
        Substitution(new, old, reasons.get(old, "not used"))
        for new, old in zip(extra, replaced, strict=False)
    )
