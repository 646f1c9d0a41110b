"""Where a dataset's files live and how they are named, checked and recorded.

Every file the build writes is ``<out>/<one of OUTPUT_FOLDERS>/<plain name>``: names are made
from DICOM text only through :func:`petctiqa.safe_paths.safe_component` (in
:func:`slice_id_for`), and :func:`check_output_folders` makes sure the folders themselves lie
inside the output folder. Small JSON records under ``.build-state/`` say what was written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from petctiqa.atomic import atomic_write_text, temporary_target
from petctiqa.dataset.folder import CROPS_DIR, DATASET_JSON, STATE_DIR
from petctiqa.dataset.manifest import MANIFEST_NAME
from petctiqa.dataset.split import SPLIT_NAME
from petctiqa.safe_paths import UnsafePathError, inside, join_component, safe_component

IMAGE_SUFFIX = {"jpeg": ".jpg", "png": ".png"}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str | None:
    """sha256 of a file's bytes, or ``None`` when it does not exist."""
    try:
        return sha256_hex(path.read_bytes())
    except FileNotFoundError:
        return None


def slice_id_for(patient_id: str, slice_number: int) -> str:
    """``<patient>_s<k>``, the patient ID made a safe file name (DICOM text never chooses a
    path: see :mod:`petctiqa.safe_paths`); the stem of every file of that slice."""
    return f"{safe_component(patient_id)}_s{slice_number}"


def image_rel_path(image_id: str, image_format: str) -> str:
    return f"images/{image_id}{IMAGE_SUFFIX[image_format]}"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any], durable: bool = True) -> None:
    atomic_write_text(path, json.dumps(value, indent=2) + "\n", durable=durable)


OUTPUT_FOLDERS = (
    "images",
    "references",
    "renders",
    "sheets",
    f"sheets/{CROPS_DIR}",
    STATE_DIR,
    f"{STATE_DIR}/patients",
    f"{STATE_DIR}/slices",
)
"""Every folder the build writes files into (checked once to lie inside the output folder)."""


def check_output_folders(out_dir: Path) -> None:
    """Refuse output folders that resolve outside ``out_dir`` (a symlink to elsewhere): with
    each file name checked by :func:`out_file`, every file then stays inside ``out_dir``."""
    for folder in OUTPUT_FOLDERS:
        inside(out_dir, out_dir / folder)


def out_file(out_dir: Path, rel: str) -> Path:
    """``out_dir / rel`` for ``rel`` = ``<one of OUTPUT_FOLDERS>/<plain file name>``; anything
    else (a name with ``/`` or ``..``, from a damaged state file, say) is refused."""
    folder, _, name = rel.rpartition("/")
    if folder not in OUTPUT_FOLDERS:
        raise UnsafePathError(f"{out_dir}: {rel!r} is not a file of the dataset's folders")
    return join_component(out_dir / folder, name)


def reference_rel_path(slice_id: str) -> str:
    """``references/<slice_id>.png``, the slice's undistorted render."""
    return f"references/{slice_id}.png"


def render_rel_path(slice_id: str, volume_key: str) -> str:
    """``renders/<slice_id>_<key>.png``: the slice rendered after a protocol's PET/CT-domain
    axes at the levels ``key`` names (the input of its fused-image and file axes)."""
    return f"renders/{slice_id}_{safe_component(volume_key)}.png"


def patient_state_path(out_dir: Path, patient_id: str) -> Path:
    return out_file(out_dir, f"{STATE_DIR}/patients/{safe_component(patient_id)}.json")


def slice_state_path(out_dir: Path, slice_id: str) -> Path:
    return out_file(out_dir, f"{STATE_DIR}/slices/{slice_id}.json")


OUTPUT_FILES = (MANIFEST_NAME, SPLIT_NAME, DATASET_JSON)


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete the atomic writer's temporary files that a killed build left in the output
    folders (images, references, sheets, the build state and beside the top-level files);
    returns how many. Only names of the writer's pattern are touched."""
    removed = 0
    folders = [out_dir / name for name in OUTPUT_FOLDERS] + [out_dir]
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            target = temporary_target(entry.name)
            if target is None or not entry.is_file(follow_symlinks=False):
                continue
            if folder == out_dir and target not in OUTPUT_FILES:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed
