"""Patient-level train/test split: every image of a patient lands in the same part."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from petctiqa.atomic import atomic_write_text
from petctiqa.errors import DatasetError
from petctiqa.seeding import rng_for

SPLIT_NAME = "split.csv"
SPLIT_KEY = "train-test-split"


def count_test_patients(n_patients: int, test_fraction: float) -> int:
    """How many of ``n_patients`` go to the test part.

    ``round(test_fraction * n)``, but at least one test and one training patient whenever there are
    two or more patients and ``test_fraction > 0`` (20 patients at 0.2 -> 4 test patients).
    """
    if n_patients < 2 or test_fraction <= 0:
        return 0
    return min(n_patients - 1, max(1, round(test_fraction * n_patients)))


def split_patients(patient_ids: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Map each patient to ``"train"`` or ``"test"``.

    The patients are sorted, shuffled with ``rng_for(seed, "train-test-split")`` and the first
    :func:`count_test_patients` of the shuffle become the test part; the result is the same
    whatever order the IDs come in.
    """
    ordered = sorted(set(patient_ids))
    n_test = count_test_patients(len(ordered), test_fraction)
    order = rng_for(seed, SPLIT_KEY).permutation(len(ordered))
    test = {ordered[i] for i in order[:n_test]}
    return {pid: ("test" if pid in test else "train") for pid in ordered}


def write_split(path: Path, split: dict[str, str]) -> None:
    """Write ``split.csv`` (columns patient_id, split; sorted by patient) atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["patient_id", "split"])
    for pid in sorted(split):
        writer.writerow([pid, split[pid]])
    atomic_write_text(path, buffer.getvalue())


def read_split(path: Path) -> dict[str, str]:
    """Read ``split.csv`` back; a patient listed twice or a bad split name is an error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: split file not found") from None
    result: dict[str, str] = {}
    for i, row in enumerate(csv.DictReader(io.StringIO(text))):
        pid, part = row.get("patient_id"), row.get("split")
        if not pid or part not in ("train", "test"):
            raise DatasetError(f"{path}: line {i + 2}: bad row {row!r}")
        if pid in result:
            raise DatasetError(f"{path}: line {i + 2}: patient {pid!r} listed twice")
        result[pid] = part
    return result
