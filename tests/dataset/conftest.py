"""Fixtures shared by the dataset tests: a small protocol and a small phantom source."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from petctiqa.protocol import load_dataset_protocol

SHIPPED_TEXT = (resources.files("petctiqa_protocols") / "pet-ct-iqa-ds.toml").read_text()


@pytest.fixture(scope="session")
def small_protocol(tmp_path_factory) -> Path:
    """The shipped protocol rendered at 128 px so the fast tests stay fast."""
    path = tmp_path_factory.mktemp("protocol") / "small.toml"
    path.write_text(SHIPPED_TEXT.replace("size = 512 ", "size = 128 "))
    assert load_dataset_protocol(path).render.size == 128
    return path


@pytest.fixture(scope="session")
def small_phantom(tmp_path_factory) -> Path:
    """Three small-matrix phantom patients (CT 64x64, PET 32x32) in the NBIA layout."""
    from petctiqa.phantom import write_phantom_study

    root = tmp_path_factory.mktemp("phantom")
    for index in range(1, 4):
        write_phantom_study(root, index, seed=0, ct_matrix=64, pet_matrix=32)
    return root
