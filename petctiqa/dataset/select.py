"""Which patients and which CT slices make up a dataset.

Patients: one PET/CT pair per patient (the pair with the longest z overlap), candidates ordered
deterministically (sorted IDs shuffled by the dataset seed, or an explicit list), the first N
usable ones kept. Slices: K CT slices at distinct levels spread evenly over the PET/CT overlap,
after skipping a margin at both ends and every slice with too little body.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from petctiqa import patient_list
from petctiqa.errors import DatasetError
from petctiqa.seeding import rng_for

if TYPE_CHECKING:  # pairing is imported lazily so this module stays importable on its own
    from petctiqa.dicom.pairing import PetCtPair

BODY_HU_THRESHOLD = -500.0
"""A CT pixel is body when its HU value is above this (air and aerated lung are below)."""
PATIENT_ORDER_KEY = "patient-selection"


class NoUsableSlices(DatasetError):
    """A patient's PET/CT pair cannot give K distinct slices with enough body in the overlap."""


# ----------------------------------------------------------------------------- patients


def _pair_preference(pair: PetCtPair) -> tuple:
    """Sort key, best first: longest overlap, widest PET field, most PET slices, then UIDs."""
    low, high = pair.overlap_mm
    pet = pair.pet
    field_mm2 = pet.rows * pet.pixel_spacing[0] * pet.columns * pet.pixel_spacing[1]
    return (-(high - low), -field_mm2, -pet.n_slices, pet.series_uid, pair.ct.series_uid)


def pairs_by_preference(pairs: Sequence[PetCtPair]) -> dict[str, list[PetCtPair]]:
    """Each patient's pairs, best first (longest z overlap, then widest PET field), by ID."""
    ranked: dict[str, list[PetCtPair]] = {}
    for pair in sorted(pairs, key=_pair_preference):
        ranked.setdefault(pair.patient_id, []).append(pair)
    return dict(sorted(ranked.items()))


def read_patient_list(path: Path) -> list[str]:
    """Patient IDs from a patient-list file (:mod:`petctiqa.patient_list`), errors as
    DatasetError."""
    try:
        return patient_list.read_patient_list(path)
    except patient_list.PatientListError as exc:
        raise DatasetError(str(exc)) from None


def order_candidates(
    patient_ids: Sequence[str], seed: int, patient_list: Sequence[str] | None = None
) -> list[str]:
    """The order in which patients are tried.

    With ``patient_list``: that order, and every listed ID must be among ``patient_ids``.
    Otherwise the sorted IDs shuffled by ``rng_for(seed, "patient-selection")``; taking the first
    N usable ones is then a seeded random sample, and the first N of a larger N' are the same.
    """
    available = sorted(set(patient_ids))
    if patient_list is not None:
        missing = [pid for pid in patient_list if pid not in set(available)]
        if missing:
            raise DatasetError(
                f"patient {missing[0]!r} from the patient list has no PET/CT pair in the source"
            )
        return list(patient_list)
    order = rng_for(seed, PATIENT_ORDER_KEY).permutation(len(available))
    return [available[i] for i in order]


# ----------------------------------------------------------------------------- slices


def body_fractions(ct_hu: np.ndarray) -> np.ndarray:
    """Fraction of body pixels (HU > -500) in each slice of a (slices, rows, cols) CT array."""
    return (ct_hu > BODY_HU_THRESHOLD).mean(axis=(1, 2))


def choose_slices(
    positions_mm: np.ndarray,
    body_fraction: np.ndarray,
    overlap_mm: tuple[float, float],
    k: int,
    margin_fraction: float,
    min_body_fraction: float,
) -> list[int]:
    """Indices of K CT slices at distinct levels spread over the PET/CT overlap.

    The overlap ``(low, high)`` (mm along the CT slice normal) loses ``margin_fraction`` of its
    length at each end; of the CT slices inside, those with ``body_fraction >=
    min_body_fraction`` are candidates. K target positions are spread evenly over the inner range
    (its centre for K = 1) and each takes the nearest candidate not yet taken. Returns indices
    sorted by position; raises :class:`NoUsableSlices` when there are fewer than K candidates.
    """
    positions_mm = np.asarray(positions_mm, dtype=np.float64)
    body_fraction = np.asarray(body_fraction, dtype=np.float64)
    low, high = sorted(overlap_mm)
    margin = margin_fraction * (high - low)
    inner_low, inner_high = low + margin, high - margin
    inside = (positions_mm >= inner_low - 1e-6) & (positions_mm <= inner_high + 1e-6)
    candidates = np.flatnonzero(inside & (body_fraction >= min_body_fraction))
    if len(candidates) < k:
        raise NoUsableSlices(
            f"only {len(candidates)} CT slices in the inner PET/CT overlap "
            f"[{inner_low:.1f}, {inner_high:.1f}] mm have at least {min_body_fraction:.0%} body; "
            f"{k} needed"
        )
    if k == 1:
        targets = np.array([(inner_low + inner_high) / 2])
    else:
        targets = np.linspace(inner_low, inner_high, k)
    free = np.ones(len(candidates), dtype=bool)
    chosen: list[int] = []
    for target in targets:
        distance = np.abs(positions_mm[candidates] - target)
        distance[~free] = np.inf
        best = int(np.argmin(distance))
        free[best] = False
        chosen.append(int(candidates[best]))
    return sorted(chosen, key=lambda i: positions_mm[i])
