"""Per-rater presentation order: a seeded random shuffle in which two consecutive images never
come from the same source slice (so a rater never compares siblings side by side in time)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from petctiqa.errors import RatingError
from petctiqa.seeding import rng_for


def presentation_order(groups: Sequence[str], seed: int, rater: str) -> np.ndarray:
    """Indices into ``groups`` (one group label = source slice per image) in presentation order.

    Drawn from ``rng_for(seed, "order/<rater>")``: at each step a group other than the previous
    one is chosen with probability proportional to its remaining images (a group is forced when
    it would otherwise become impossible to separate), and one of its images at random. Raises
    :class:`RatingError` if no such order exists (one slice holds more than half the images).
    """
    labels, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    total = len(inverse)
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    rng = rng_for(seed, f"order/{rater}")
    counts = np.bincount(inverse, minlength=len(labels)).astype(np.int64)
    if counts.max() > (total + 1) // 2:
        raise RatingError(
            f"cannot order the images: slice {labels[counts.argmax()]!r} holds "
            f"{counts.max()} of {total} images, more than half"
        )
    members = [list(rng.permutation(np.flatnonzero(inverse == g))) for g in range(len(labels))]
    order = np.empty(total, dtype=np.int64)
    prev = -1
    for step in range(total):
        remaining = total - step
        weights = counts.astype(float)
        if prev >= 0:
            weights[prev] = 0.0
        forced = np.flatnonzero(counts > remaining // 2)
        forced = forced[forced != prev]
        if forced.size:
            group = int(forced[0])
        else:
            group = int(rng.choice(len(labels), p=weights / weights.sum()))
        order[step] = members[group].pop()
        counts[group] -= 1
        prev = group
    return order
