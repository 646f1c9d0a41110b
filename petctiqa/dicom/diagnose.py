"""Why a patient or series of an indexed DICOM tree cannot be used, in one line each.

Indexing skips unreadable files and pairing drops series whose geometry does not form one
regular stack; this module turns what they found into messages that name the patient, the
series, the file and the reason, for the dataset build (which may take another patient) and
anyone else who must explain a missing PET/CT pair:

- :func:`broken_series`: series that fail their geometry check while damaged files (cut,
  unreadable, a header without UIDs) sit in their folder: most likely their missing slices;
- :func:`patients_without_pair`: every patient with no usable PET/CT pair, and why;
- :func:`unused_pet_series`: PET series left out although their patient has a pair;
- :func:`pet_suv_problem`: why a PET series cannot be converted to SUV (no dose, no weight).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from petctiqa.dicom.geometry import series_stack_geometry
from petctiqa.dicom.index import HEADER_DAMAGE_REASONS, is_nbia_metadata
from petctiqa.dicom.pairing import PetCtPair, unpaired_pet_series
from petctiqa.dicom.records import DicomIndex, SeriesInfo, SkippedFile, series_label
from petctiqa.dicom.suv import series_suv_parameters
from petctiqa.dicom.volume import read_slice_header
from petctiqa.errors import DicomError

DAMAGE_REASONS = ("truncated", "unreadable")
"""Index skip reasons that mean a damaged file (not merely a non-image or non-DICOM file)."""
SHOWN_FILES = 3
"""Skipped files named in one message; the others are counted."""


@dataclass(frozen=True)
class BrokenSeries:
    """A CT or PET series that fails its geometry check while damaged files (cut or unreadable,
    or a header without the identifying UIDs) sit in its folder: most likely they are its
    missing slices."""

    series: SeriesInfo
    problem: str
    """The geometry check's message (it starts with the series label)."""
    damaged: tuple[SkippedFile, ...]

    def describe(self) -> str:
        """``<file>: <reason>; without it CT series '...' in <folder> fails its geometry check:
        <problem>`` (the first damaged file leads, the others are counted)."""
        first, others = self.damaged[0], self.damaged[1:]
        label = series_label(self.series)
        problem = self.problem.removeprefix(f"{label}: ")
        more = ""
        if others:
            shown = ", ".join(str(item.path) for item in others[:SHOWN_FILES])
            etc = ", ..." if len(others) > SHOWN_FILES else ""
            more = f" (and {len(others)} more damaged: {shown}{etc})"
        it = "them" if others else "it"
        return (
            f"{first.path}: {first.reason}{more}; without {it} the {label} fails its geometry "
            f"check: {problem}"
        )


def _files_beside(index: DicomIndex, series: SeriesInfo) -> tuple[SkippedFile, ...]:
    """Files the index skipped in the folders of ``series`` (an NBIA metadata table aside)."""
    folders = {f.parent for f in series.files}
    return tuple(
        item for item in index.skipped if item.path.parent in folders and not is_nbia_metadata(item)
    )


def broken_series(index: DicomIndex) -> list[BrokenSeries]:
    """CT and PET series that fail their geometry check with damaged files in their folder."""
    damage = DAMAGE_REASONS + HEADER_DAMAGE_REASONS
    if not any(s.reason.startswith(damage) for s in index.skipped):
        return []
    found = []
    for series in index.series:
        if series.modality not in ("CT", "PT"):
            continue
        nearby = tuple(i for i in _files_beside(index, series) if i.reason.startswith(damage))
        if not nearby:
            continue
        try:
            series_stack_geometry(series)
        except DicomError as exc:
            found.append(BrokenSeries(series, str(exc), nearby))
    return found


@dataclass(frozen=True)
class SeriesProblem:
    """Why a patient has no usable PET/CT pair, or why one of its PET series is not used."""

    patient_id: str
    problem: str
    """What is wrong; it starts with the series label when a series is at fault."""
    skipped: tuple[SkippedFile, ...] = ()
    """Files skipped beside that series (a missing slice is often one of them)."""

    def describe(self) -> str:
        """``patient <id>: <problem>[; skipped beside it: <file>: <reason> (and N more)]``."""
        text = f"patient {self.patient_id}: {self.problem}"
        if self.skipped:
            shown = "; ".join(f"{i.path}: {i.reason}" for i in self.skipped[:SHOWN_FILES])
            more = len(self.skipped) - SHOWN_FILES
            text += f"; skipped beside it: {shown}" + (f" (and {more} more)" if more > 0 else "")
        return text


def _series_problem(index: DicomIndex, series: SeriesInfo, reason: str) -> SeriesProblem:
    """A problem of ``series`` (or of the CT its reason names), with the files skipped beside
    the series at fault."""
    at_fault = series
    for other in index.series:
        if other.patient_id == series.patient_id and reason.startswith(series_label(other)):
            at_fault = other
            break
    problem = reason if reason.startswith(series_label(at_fault)) else (
        f"{series_label(series)}: {reason}"
    )  # fmt: skip
    return SeriesProblem(series.patient_id, problem, _files_beside(index, at_fault))


def patients_without_pair(
    index: DicomIndex, pairs: Sequence[PetCtPair]
) -> dict[str, SeriesProblem]:
    """Every patient of ``index`` without a PET/CT pair, with the reason (sorted by ID)."""
    paired = {pair.patient_id for pair in pairs}
    unpaired: dict[str, tuple[SeriesInfo, str]] = {}
    for pet, reason in unpaired_pet_series(index):
        unpaired.setdefault(pet.patient_id, (pet, reason))
    by_patient: dict[str, list[SeriesInfo]] = {}
    for series in index.series:
        by_patient.setdefault(series.patient_id, []).append(series)
    problems: dict[str, SeriesProblem] = {}
    for pid in sorted(set(by_patient) - paired):
        if pid in unpaired:
            problems[pid] = _series_problem(index, *unpaired[pid])
            continue
        nm = [s for s in by_patient[pid] if s.modality == "NM"]
        if nm:
            problem = (
                f"{series_label(nm[0])}: Modality NM, not PT: not read as PET (a PET series "
                "relabelled NM?); the patient has no PET series"
            )
            problems[pid] = SeriesProblem(pid, problem, _files_beside(index, nm[0]))
            continue
        present = ", ".join(sorted({s.modality for s in by_patient[pid]}))
        problems[pid] = SeriesProblem(
            pid, f"no PET series (Modality PT); series present: {present}"
        )
    return problems


def unused_pet_series(index: DicomIndex, pairs: Sequence[PetCtPair]) -> list[SeriesProblem]:
    """PET series without a CT partner although their patient has a pair through another."""
    paired = {pair.patient_id for pair in pairs}
    return [
        _series_problem(index, pet, reason)
        for pet, reason in unpaired_pet_series(index)
        if pet.patient_id in paired
    ]


def pet_suv_problem(series: SeriesInfo) -> str | None:
    """Why ``series`` cannot be converted to body-weight SUV (no dose, no weight, ...), from
    its first file's header; None when it can. The message names the series and the file."""
    if not series.files:
        return f"{series_label(series)}: no files"
    first = series.files[0]
    try:
        series_suv_parameters([read_slice_header(first)], series_label(series))
    except DicomError as exc:
        return f"{exc} ({first.name})"
    return None
