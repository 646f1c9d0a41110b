"""Clean reference renders for generator pretraining, from the sources a user has.

- a build-dataset folder: its ``references/*.png`` (the undistorted render of every slice);
- a rated dataset in any layout :func:`petctiqa.iqa.data.load_iqa_dataset` reads, restricted to
  given patients: the samples' known references (a PET-CT-IQA-DS folder with ``groups.csv``:
  the (0, 0, 0) images);
- a DICOM folder: every ``stride``-th CT slice of each PET/CT pair, rendered with the protocol;
- ``phantom``: the built-in synthetic studies, written to a cache folder and rendered.

References are returned sorted by key, so the generator's draws do not depend on the order in
which a file system lists folders.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petctiqa import phantom
from petctiqa.dataset.folder import DatasetFolder
from petctiqa.errors import DatasetError
from petctiqa.iqa.data import load_iqa_dataset
from petctiqa.iqa.preprocess import read_image
from petctiqa.iqa.score import render_dicom_study
from petctiqa.protocol import load_dataset_protocol

PHANTOM_SOURCE = "phantom"


@dataclass(frozen=True)
class Reference:
    key: str
    """Where it came from: a file path or ``<folder>#<patient>/<series>/slice<k>``."""
    rgb: np.ndarray
    """uint8 (H, W, 3)."""


def _rgb(path: Path) -> np.ndarray:
    image = read_image(path)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def references_from_samples(samples: Iterable) -> list[Reference]:
    """The distinct known references of rated samples (``IqaSample.reference``)."""
    paths = sorted({s.reference for s in samples if s.reference is not None})
    return [Reference(str(p), _rgb(p)) for p in paths]


def _build_folder_references(folder: Path) -> list[Reference]:
    paths = sorted(DatasetFolder(folder).references.glob("*.png"))
    return [Reference(str(p), _rgb(p)) for p in paths]


def _dicom_references(folder: Path, stride: int, protocol: str | Path | None) -> list[Reference]:
    settings = load_dataset_protocol(protocol).render if protocol else None
    return [Reference(r.label, r.rgb) for r in render_dicom_study(folder, stride, settings)]


def _phantom_references(
    cache: Path, patients: int, stride: int, protocol: str | Path | None
) -> list[Reference]:
    folder = cache / f"phantom-{patients}-seed0"
    if not folder.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        # Written beside its final name and renamed: a killed run leaves no half tree there.
        partial = Path(tempfile.mkdtemp(prefix=".phantom-", dir=cache))
        try:
            phantom.write_phantom_tree(partial, patients=patients, seed=0, jobs=1)
            partial.rename(folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return _dicom_references(folder, stride, protocol)


def collect_references(
    sources: Sequence[str | Path],
    patients: Sequence[str] | None = None,
    stride: int = 8,
    protocol: str | Path | None = None,
    cache: Path | None = None,
    phantom_patients: int = 2,
) -> list[Reference]:
    """Clean references from every source (see the module docstring), sorted by key.

    ``patients`` restricts rated datasets to those groups (the training side: pretraining never
    sees the test side's images).
    """
    found: list[Reference] = []
    for source in sources:
        if str(source) == PHANTOM_SOURCE:
            where = cache or Path.home() / ".cache" / "petctiqa"
            found += _phantom_references(where, phantom_patients, stride, protocol)
            continue
        path = Path(source)
        if not path.exists():
            raise DatasetError(f"{path}: no such file or folder")
        layout = DatasetFolder(path)
        if path.is_dir() and layout.references.is_dir() and not layout.mos.exists():
            found += _build_folder_references(path)
            continue
        try:
            dataset = load_iqa_dataset(path)
        except DatasetError:
            if path.is_dir():
                found += _dicom_references(path, stride, protocol)
                continue
            raise
        samples = dataset.subset(patients) if patients is not None else dataset.samples
        refs = references_from_samples(samples)
        if not refs:
            raise DatasetError(
                f"{path}: no clean reference images known (needs distortion levels, e.g. "
                "groups.csv, or a manifest with a reference column)"
            )
        found += refs
    if not found:
        raise DatasetError("pretraining: the sources hold no clean reference image")
    return sorted(found, key=lambda r: r.key)
