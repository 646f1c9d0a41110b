"""Walking an archive: which units of work it holds, in a fixed order, each with a stable key.

A unit is an image file (key: its path relative to the input it was found under + its sha256,
so a changed file is scored again) or a DICOM PET/CT pair (key: the CT and PET series UIDs and
the slice stride; its rows are keyed by CT series UID + slice index). Inputs are walked in the
order given: image files of a folder sorted by path, then the folder's PET/CT pairs in
``find_pet_ct_pairs`` order. A folder with neither gives one unit that fails with the reason.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petctiqa.dicom.index import index_dicom_tree
from petctiqa.dicom.pairing import find_pet_ct_pairs
from petctiqa.errors import DatasetError
from petctiqa.iqa.data import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Unit:
    """One image file or one PET/CT pair to score."""

    kind: str
    """"image", "study", or "missing" (an input with nothing scorable: fails with ``reason``)."""
    key: str
    label: str
    """The image path, or ``<folder>#<patient>/<ct series>`` for a study."""
    path: Path
    pair: Any = None
    """:class:`petctiqa.dicom.pairing.PetCtPair` for a study."""
    reason: str = ""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        return f"unreadable({exc.strerror or exc})"
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def _file_sha256_at(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def checkpoint_sha256(path: Path) -> str:
    """:func:`file_sha256` of a checkpoint, hashed once per run while its size and modification
    time stay the same: the journal's settings and each ONNX export's cache key need it, and a
    checkpoint is hundreds of MB."""
    stat = Path(path).stat()
    return _file_sha256_at(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def image_unit(path: Path, root: Path) -> Unit:
    relative = path.relative_to(root).as_posix() if path != root else path.name
    return Unit("image", f"file:{relative}@{file_sha256(path)}", str(path), path)


def study_units(folder: Path, slice_stride: int) -> list[Unit]:
    """One unit per PET/CT pair found under ``folder`` (none when it holds no DICOM pair)."""

    units = []
    for pair in find_pet_ct_pairs(index_dicom_tree(folder)):
        key = f"study:{pair.ct.series_uid}|{pair.pet.series_uid}|stride{slice_stride}"
        label = f"{folder}#{pair.patient_id}/{pair.ct.series_uid}"
        units.append(Unit("study", key, label, folder, pair))
    return units


def walk_inputs(inputs: Sequence[Path], slice_stride: int = 1) -> list[Unit]:
    """Every unit under ``inputs`` in scoring order (see the module docstring)."""
    units: list[Unit] = []
    for item in map(Path, inputs):
        if item.is_file():
            units.append(image_unit(item, item))
        elif item.is_dir():
            images = sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            found = [image_unit(p, item) for p in images] + study_units(item, slice_stride)
            if not found:
                reason = f"{item}: no images and no PET/CT pair found"
                found = [Unit("missing", f"missing:{item}", str(item), item, reason=reason)]
            units.extend(found)
        else:
            raise DatasetError(f"{item}: no such file or folder")
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        # The same file or series reached twice (overlapping inputs): score it once.
        seen: set[str] = set()
        units = [u for u in units if not (u.key in seen or seen.add(u.key))]
    return units
