"""Pair each PET series with the CT of the same study and frame of reference.

A CT is a candidate for a PET series when both share PatientID, StudyInstanceUID and a non-empty
FrameOfReferenceUID (then no registration is needed: both live in one patient coordinate system)
and their slice ranges overlap along the CT slice normal. Among candidates the CT with the
longest overlap wins (usually the attenuation-correction CT covering the whole PET range), then
the one with more slices, then the lower series number / UID, so the choice is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petctiqa.dicom.geometry import series_stack_geometry
from petctiqa.dicom.records import DicomIndex, SeriesInfo
from petctiqa.errors import DicomError


@dataclass(frozen=True)
class PetCtPair:
    """A PET series and the CT it is fused with."""

    patient_id: str
    study_uid: str
    frame_of_reference_uid: str
    pet: SeriesInfo
    ct: SeriesInfo
    overlap_mm: tuple[float, float]
    """(low, high) positions along the CT slice normal (mm) covered by both series' slice
    centres."""

    @property
    def overlap_length_mm(self) -> float:
        return self.overlap_mm[1] - self.overlap_mm[0]


def _slice_range_along(series: SeriesInfo, normal: np.ndarray) -> tuple[float, float]:
    positions = np.array([g.image_position for g in series.slice_geometry], dtype=np.float64)
    along = positions @ normal
    return float(along.min()), float(along.max())


def _ct_normal(ct: SeriesInfo) -> np.ndarray:
    return series_stack_geometry(ct).slice_normal


def z_overlap(pet: SeriesInfo, ct: SeriesInfo) -> tuple[float, float] | None:
    """The overlap of the two slice ranges along the CT normal, or None when they are disjoint.

    Raises DicomError when either series has inconsistent geometry.
    """
    normal = _ct_normal(ct)
    series_stack_geometry(pet)  # validates the PET stack too
    ct_low, ct_high = _slice_range_along(ct, normal)
    pet_low, pet_high = _slice_range_along(pet, normal)
    low, high = max(ct_low, pet_low), min(ct_high, pet_high)
    if high < low:
        return None
    return (low, high)


def pair_problem(pet: SeriesInfo, ct: SeriesInfo) -> str | None:
    """Why ``ct`` is not a partner of ``pet`` under this module's rule (same patient, study and
    non-empty FrameOfReferenceUID, overlapping slice ranges); None when it is. For callers that
    hold one PET and one CT (``petctiqa fetch`` verifies a downloaded pair with it)."""
    if (ct.patient_id, ct.study_uid) != (pet.patient_id, pet.study_uid):
        return "CT and PET belong to different patients or studies"
    if not pet.frame_of_reference_uid:
        return "PET has no FrameOfReferenceUID"
    if ct.frame_of_reference_uid != pet.frame_of_reference_uid:
        return (
            f"FrameOfReferenceUID {ct.frame_of_reference_uid} differs from the PET's "
            f"{pet.frame_of_reference_uid}"
        )
    try:
        overlap = z_overlap(pet, ct)
    except DicomError as exc:
        return str(exc)
    if overlap is None:
        return f"CT series '{ct.series_description}' does not overlap the PET range"
    return None


def _ct_candidates(index: DicomIndex, pet: SeriesInfo) -> list[SeriesInfo]:
    return [
        s
        for s in index.series
        if s.modality == "CT"
        and s.patient_id == pet.patient_id
        and s.study_uid == pet.study_uid
        and pet.frame_of_reference_uid
        and s.frame_of_reference_uid == pet.frame_of_reference_uid
    ]


def _best_pair(index: DicomIndex, pet: SeriesInfo) -> PetCtPair | str:
    """The pair for one PET series, or the reason there is none."""
    candidates = _ct_candidates(index, pet)
    if not candidates:
        if not pet.frame_of_reference_uid:
            return "PET has no FrameOfReferenceUID"
        return "no CT series with the same study and frame of reference"
    scored = []
    reasons = []
    for ct in candidates:
        try:
            overlap = z_overlap(pet, ct)
        except DicomError as exc:
            reasons.append(str(exc))
            continue
        if overlap is None:
            reasons.append(f"CT series '{ct.series_description}' does not overlap the PET range")
            continue
        number = ct.series_number if ct.series_number is not None else 1 << 30
        key = (-(overlap[1] - overlap[0]), -ct.n_slices, number, ct.series_uid)
        scored.append((key, ct, overlap))
    if not scored:
        return "; ".join(reasons)
    scored.sort(key=lambda item: item[0])
    _, ct, overlap = scored[0]
    return PetCtPair(
        patient_id=pet.patient_id,
        study_uid=pet.study_uid,
        frame_of_reference_uid=pet.frame_of_reference_uid,
        pet=pet,
        ct=ct,
        overlap_mm=(round(overlap[0], 6), round(overlap[1], 6)),
    )


def find_pet_ct_pairs(index: DicomIndex) -> list[PetCtPair]:
    """At most one pair per PET series, sorted by (patient_id, study_uid, PET series)."""
    return [p for p in _pairs_and_reasons(index)[0]]


def unpaired_pet_series(index: DicomIndex) -> list[tuple[SeriesInfo, str]]:
    """PET series without a CT partner, each with the reason (for reports)."""
    return _pairs_and_reasons(index)[1]


def _pairs_and_reasons(
    index: DicomIndex,
) -> tuple[list[PetCtPair], list[tuple[SeriesInfo, str]]]:
    pairs: list[PetCtPair] = []
    unpaired: list[tuple[SeriesInfo, str]] = []
    for pet in index.series:
        if pet.modality != "PT":
            continue
        result = _best_pair(index, pet)
        if isinstance(result, PetCtPair):
            pairs.append(result)
        else:
            unpaired.append((pet, result))

    def order(series: SeriesInfo) -> tuple:
        number = series.series_number if series.series_number is not None else 1 << 30
        return (series.patient_id, series.study_uid, number, series.series_uid)

    pairs.sort(key=lambda p: order(p.pet))
    unpaired.sort(key=lambda item: order(item[0]))
    return pairs, unpaired
