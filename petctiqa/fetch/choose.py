"""Which series of a study to fetch, from the archive's listings alone (pure functions).

The PET: attenuation-corrected before NAC/MIP, then the most images, then the lowest series
number and UID. The CT: TCIA's listings do not give FrameOfReferenceUID, so the CT series of the
PET's study are *ranked* here and the pair is *verified* on the headers after download
(:mod:`petctiqa.fetch.local`). Ranking drops localizers, dose reports and series of fewer than
:data:`MIN_VOLUME_INSTANCES` images; a description that names the attenuation-correction CT (AC,
CTAC, PET, WB, whole body, low dose) ranks first; then the instance count nearest the PET's (the
AC CT covers the PET field with similar slice counts); then series number and UID.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from petctiqa.fetch.layout import format_study_date
from petctiqa.tcia_client import RemoteSeries

MIN_VOLUME_INSTANCES = 4
"""Series with fewer images are localizers or reports, never a PET or CT volume."""

_NON_AC_PET = re.compile(r"\b(nac|non[ _-]?ac|noac|uncorrected|no[ _-]?attn|mip)\b", re.IGNORECASE)
_NOT_A_CT_VOLUME = re.compile(
    r"topogram|scout|localizer|locator|surview|dose|protocol|report|screen ?save|\bmip\b",
    re.IGNORECASE,
)
_AC_CT_HINT = re.compile(
    r"\b(ac|ctac|ac[ _-]?ct|attn|attenuation|pet|wb|whole[ _-]?body|low[ _-]?dose)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class StudyPlan:
    """One study to fetch: its PET series and the CT candidates, best first."""

    patient_id: str
    study_uid: str
    pet: RemoteSeries
    ct_candidates: tuple[RemoteSeries, ...]


@dataclass(frozen=True)
class PatientStudies:
    """The studies of one patient that qualify for fetching (each a PET and CT candidates)."""

    patient_id: str
    studies: tuple[StudyPlan, ...]


def _series_order(series: RemoteSeries) -> tuple[float, str]:
    number = series.series_number
    return (math.inf if number is None else number, series.series_uid)


def pick_pet_series(study_series: Iterable[RemoteSeries]) -> RemoteSeries | None:
    """The PET series of a study: attenuation-corrected before NAC/MIP, then most images, then
    lowest series number and UID. None when the study has no PT volume."""
    pets = [s for s in study_series if s.modality == "PT" and s.image_count >= MIN_VOLUME_INSTANCES]
    if not pets:
        return None
    return min(
        pets,
        key=lambda s: (
            bool(_NON_AC_PET.search(s.series_description)),
            -s.image_count,
            *_series_order(s),
        ),
    )


def rank_ct_candidates(
    pet: RemoteSeries, study_series: Iterable[RemoteSeries]
) -> tuple[RemoteSeries, ...]:
    """CT series of the PET's study, most likely attenuation-correction CT first (see module doc)."""
    cts = [
        s
        for s in study_series
        if s.modality == "CT"
        and s.study_uid == pet.study_uid
        and s.image_count >= MIN_VOLUME_INSTANCES
        and not _NOT_A_CT_VOLUME.search(s.series_description)
    ]

    def key(ct: RemoteSeries) -> tuple:
        count_mismatch = abs(math.log(ct.image_count / max(pet.image_count, 1)))
        return (
            not _AC_CT_HINT.search(ct.series_description),
            round(count_mismatch, 6),
            *_series_order(ct),
        )

    return tuple(sorted(cts, key=key))


def patient_studies(patient_id: str, series: Iterable[RemoteSeries]) -> PatientStudies | None:
    """Every study of the patient that has a PET volume and at least one CT candidate; None if
    there is none. Studies are ordered by study date, then UID."""
    by_study: dict[str, list[RemoteSeries]] = {}
    for s in series:
        by_study.setdefault(s.study_uid, []).append(s)
    studies = []
    for study_uid, members in sorted(
        by_study.items(), key=lambda item: (format_study_date(item[1][0].study_date), item[0])
    ):
        pet = pick_pet_series(members)
        if pet is None:
            continue
        cts = rank_ct_candidates(pet, members)
        if cts:
            studies.append(StudyPlan(patient_id, study_uid, pet, cts))
    return PatientStudies(patient_id, tuple(studies)) if studies else None
