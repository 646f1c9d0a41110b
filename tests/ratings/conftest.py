"""Fixtures for the reader-study tests: a tiny dataset folder in build-dataset's layout."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

MANIFEST_HEADER = [
    "image",
    "image_id",
    "patient_id",
    "slice_id",
    "slice_number",
    "slice_position_mm",
    "study_uid",
    "ct_series_uid",
    "pet_series_uid",
    "ct_sop_uid",
    "frame_of_reference_uid",
    "reference",
    "poisson_level",
    "gaussian_level",
    "jpeg_level",
    "poisson_form",
    "poisson_value",
    "gaussian_sigma",
    "jpeg_quality",
    "seed",
    "sha256",
]


def write_tiny_dataset(root: Path, patients: int = 2, slices: int = 2, size=(24, 20)) -> Path:
    """patients x slices x 27 small JPEG images + references + manifest.csv + split.csv."""
    (root / "images").mkdir(parents=True)
    (root / "references").mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for p in range(1, patients + 1):
        pid = f"PHANTOM-{p:04d}"
        for k in range(1, slices + 1):
            sid = f"{pid}_s{k}"
            ref = f"references/{sid}.png"
            base = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(base).save(root / ref)
            for pl, gl, jl in itertools.product(range(3), range(3), range(3)):
                code = f"p{pl}g{gl}j{jl}"
                rel = f"images/{sid}_{code}.jpg"
                Image.fromarray(base).save(root / rel, quality=(100, 70, 40)[jl])
                rows.append(
                    [
                        rel,
                        f"{sid}_{code}",
                        pid,
                        sid,
                        k,
                        10.0 * k,
                        "1.2.3",
                        "1.2.4",
                        "1.2.5",
                        f"1.2.6.{k}",
                        "1.2.7",
                        ref,
                        pl,
                        gl,
                        jl,
                        "impulse",
                        (0, 0.005, 0.01)[pl],
                        (0, 5, 10)[gl],
                        (100, 70, 40)[jl],
                        0,
                        "0" * 64,
                    ]
                )
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_HEADER)
        writer.writerows(rows)
    with open(root / "split.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "split"])
        for p in range(1, patients + 1):
            writer.writerow([f"PHANTOM-{p:04d}", "test" if p == patients else "train"])
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "ds")
