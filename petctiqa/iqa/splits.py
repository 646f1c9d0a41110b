"""Patient-level splits of rated images: a split or K folds never put one patient (group) on
both sides. :mod:`petctiqa.iqa.data` re-exports these for its callers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from petctiqa.errors import DatasetError
from petctiqa.seeding import rng_for

if TYPE_CHECKING:
    from petctiqa.iqa.data import IqaDataset, IqaSample


def check_patient_split(samples: Sequence[IqaSample]) -> None:
    """Raise DatasetError when one group (patient) has images on both sides of a split."""
    seen: dict[str, str] = {}
    for s in samples:
        if s.split is None:
            continue
        other = seen.setdefault(s.group, s.split)
        if other != s.split:
            raise DatasetError(
                f"patient {s.group} is in both the train and the test split ({s.image}); "
                "splits must be patient-level"
            )


def check_disjoint(train_groups: Iterable[str], test_groups: Iterable[str]) -> None:
    both = sorted(set(train_groups) & set(test_groups))
    if both:
        raise DatasetError(f"patient(s) {', '.join(both)} on both sides of the split")


def patient_split(
    dataset: IqaDataset, test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """(train groups, test groups). Uses the data's own split when every image has one;
    otherwise a seeded patient-level split with ``ceil(test_fraction * patients)`` test patients
    (at least one, and at least one training patient)."""
    samples = dataset.samples
    if all(s.split is not None for s in samples):
        train = sorted({s.group for s in samples if s.split == "train"})
        test = sorted({s.group for s in samples if s.split == "test"})
        if train:
            check_disjoint(train, test)
            return train, test
    groups = dataset.groups
    if test_fraction <= 0:
        return groups, []
    if len(groups) < 2:
        raise DatasetError(
            f"{dataset.root}: a patient-level split needs at least 2 patients, found {len(groups)}"
        )
    order = rng_for(seed, "msiqa/split").permutation(len(groups))
    n_test = min(len(groups) - 1, max(1, math.ceil(test_fraction * len(groups))))
    test = sorted(groups[i] for i in order[:n_test])
    train = sorted(groups[i] for i in order[n_test:])
    return train, test


def patient_folds(
    groups: Sequence[str], k: int, seed: int = 0
) -> list[tuple[list[str], list[str]]]:
    """K folds by patient: [(train groups, test groups)], each patient tested exactly once.
    ``k == len(groups)`` is leave-one-patient-out (patients in sorted order)."""
    groups = sorted(set(groups))
    if k < 2 or k > len(groups):
        raise DatasetError(
            f"folds {k}: need 2 <= folds <= number of patients ({len(groups)})", setting="folds"
        )
    order = (
        np.arange(len(groups))
        if k == len(groups)
        else rng_for(seed, "msiqa/folds").permutation(len(groups))
    )
    folds = []
    for part in np.array_split(order, k):
        test = sorted(groups[i] for i in part)
        train = sorted(set(groups) - set(test))
        folds.append((train, test))
    return folds
