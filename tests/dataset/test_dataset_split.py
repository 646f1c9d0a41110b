from __future__ import annotations

import pytest

from petctiqa.dataset.split import count_test_patients, read_split, split_patients, write_split
from petctiqa.errors import DatasetError

IDS = [f"PHANTOM-{i:04d}" for i in range(1, 21)]


def test_twenty_patients_give_four_test_patients():
    split = split_patients(IDS, 0.2, seed=0)
    assert sorted(split) == IDS
    assert sum(v == "test" for v in split.values()) == 4
    assert sum(v == "train" for v in split.values()) == 16


def test_split_is_seeded_and_order_free():
    assert split_patients(list(reversed(IDS)), 0.2, 0) == split_patients(IDS, 0.2, 0)
    assert split_patients(IDS, 0.2, 0) != split_patients(IDS, 0.2, 1)


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [(1, 0.2, 0), (2, 0.2, 1), (5, 0.2, 1), (20, 0.0, 0), (3, 0.9, 2)],
)
def test_test_patient_count(n, fraction, expected):
    assert count_test_patients(n, fraction) == expected


def test_split_file_round_trip_and_duplicate_check(tmp_path):
    split = split_patients(IDS, 0.2, 3)
    path = tmp_path / "split.csv"
    write_split(path, split)
    assert path.read_text().splitlines()[0] == "patient_id,split"
    assert read_split(path) == split
    path.write_text("patient_id,split\nA,train\nA,test\n")
    with pytest.raises(DatasetError, match="'A' listed twice"):
        read_split(path)
