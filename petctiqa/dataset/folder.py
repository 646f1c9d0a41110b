"""The dataset folder: one place that names every artefact of a ``build-dataset`` folder and
reads its records back, so that the reader study (:mod:`petctiqa.ratings`) and the trainer
(:mod:`petctiqa.iqa.data`) agree on one format. The format itself is described in
``docs/dataset-folder.md``.

The build writes the folder (:mod:`petctiqa.dataset.build` through :mod:`~petctiqa.dataset.layout`,
:func:`~petctiqa.dataset.manifest.write_manifest` and :func:`~petctiqa.dataset.split.write_split`);
``collect-ratings`` adds ``ratings.sqlite`` and the exports (``mos.csv`` ...). Schemas stay with
their owners: the manifest's columns are :mod:`petctiqa.dataset.manifest`'s, the split's
:mod:`petctiqa.dataset.split`'s. This module only knows where each record lives and reads it
with the checks every reader needs (paths that stay inside the folder, a split read one way).
It imports no image library, so the reader study and the trainer load it cheaply.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petctiqa.dataset import split as split_file
from petctiqa.dataset.manifest import MANIFEST_NAME, PATH_COLUMNS, AxisColumns, axis_columns
from petctiqa.dataset.split import SPLIT_NAME
from petctiqa.errors import DatasetError
from petctiqa.safe_paths import UnsafePathError, relative_inside

DATASET_JSON = "dataset.json"
"""The build's settings and counts."""
STATE_DIR = ".build-state"
"""The build's resume bookkeeping (:mod:`petctiqa.dataset.layout`, :mod:`~petctiqa.dataset.resume`)."""
CROPS_DIR = "crops"
"""Under ``sheets/``: the 1:1 crops sheets (:mod:`petctiqa.dataset.sheets`)."""
MOS_NAME = "mos.csv"
"""Written by ``collect-ratings export``: one row per manifest image (MOS, CI, levels, split)."""
RATINGS_DB_NAME = "ratings.sqlite"
"""The reader study's SQLite database (raters, ratings, presentation order)."""
IMAGES_DIR = "images"
REFERENCES_DIR = "references"
SHEETS_DIR = "sheets"

SIMULATED_BANNER = (
    "# SIMULATED ratings: this file contains scores from simulated raters "
    "(petctiqa collect-ratings simulate), not from a reader study"
)
"""First line of every ratings file (export, admin download) that holds simulated ratings."""
SIMULATED_BANNER_PREFIX = "# SIMULATED"
"""What a reader looks for: any first line starting so marks the file as simulated."""


def _artefact(*parts: str) -> property:
    rel = "/".join(parts)
    return property(lambda self: self.root.joinpath(*parts), doc=f"``<root>/{rel}``")


@dataclass(frozen=True)
class DatasetFolder:
    """The paths of a dataset folder's artefacts (nothing is read or checked on creation)."""

    root: Path

    manifest = _artefact(MANIFEST_NAME)
    split = _artefact(SPLIT_NAME)
    dataset_json = _artefact(DATASET_JSON)
    mos = _artefact(MOS_NAME)
    ratings_db = _artefact(RATINGS_DB_NAME)
    images = _artefact(IMAGES_DIR)
    references = _artefact(REFERENCES_DIR)
    sheets = _artefact(SHEETS_DIR)
    crops_sheets = _artefact(SHEETS_DIR, CROPS_DIR)
    build_state = _artefact(STATE_DIR)

    def file(self, rel: str, where: str) -> Path:
        """``root / rel`` for a path cell read from one of the folder's files, after checking
        that it stays inside the folder (:func:`~petctiqa.safe_paths.relative_inside`);
        ``where`` (file, line, column) names the cell in the error."""
        return self.root / checked_path(rel, where)


def checked_path(text: str, where: str) -> str:
    """``text`` if it is a relative path inside the dataset folder, else :class:`DatasetError`."""
    try:
        return relative_inside(text, where)
    except UnsafePathError as exc:
        raise DatasetError(str(exc)) from None


def starts_with_simulated_banner(line: str) -> bool:
    """True for the first line of a ratings file that holds simulated ratings."""
    return line.lstrip().upper().startswith(SIMULATED_BANNER_PREFIX)


def read_split(root: Path, *, required: bool) -> dict[str, str]:
    """patient_id -> ``train``/``test`` from ``split.csv``, parsed by
    :func:`petctiqa.dataset.split.read_split` (a bad split name or a patient listed twice is an
    error). Without the file: :class:`DatasetError` when ``required``, else ``{}``."""
    path = DatasetFolder(Path(root)).split
    if not required and not path.is_file():
        return {}
    return split_file.read_split(path)


def _manifest_reader(root: Path) -> tuple[Path, csv.DictReader]:
    path = DatasetFolder(Path(root)).manifest
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: manifest not found (is {path.parent} a build-dataset folder?)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the manifest ({exc})") from None
    return path, csv.DictReader(io.StringIO(text))


def _rows(
    path: Path, reader: csv.DictReader, columns: tuple[str, ...], allow_empty_paths: bool
) -> list[tuple[str, dict[str, str]]]:
    rows = []
    for line, row in enumerate(reader, start=2):
        where = f"{path}:{line}"
        values = {c: row[c] or "" for c in columns}
        for name in PATH_COLUMNS & set(columns):
            if values[name] or not allow_empty_paths:
                values[name] = checked_path(values[name], f"{where}: column '{name}'")
        rows.append((where, values))
    return rows


def read_manifest_rows(root: Path, columns: tuple[str, ...]) -> list[tuple[str, dict[str, str]]]:
    """The ``columns`` of every ``manifest.csv`` row as ``(where, {column: text})``, where
    ``where`` is ``<manifest>:<line>`` for error messages. Path columns (``image``,
    ``reference``) must be relative paths inside the folder. A missing file or column raises
    :class:`DatasetError`; values are left as text for the caller to convert."""
    path, reader = _manifest_reader(root)
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    return _rows(path, reader, columns, allow_empty_paths=False)


def read_manifest_header(root: Path) -> list[str]:
    """The column names of ``manifest.csv`` (a missing file raises :class:`DatasetError`)."""
    _, reader = _manifest_reader(root)
    return list(reader.fieldnames or [])


def read_manifest_axes(root: Path) -> tuple[AxisColumns, ...]:
    """The distortion axes' columns of ``manifest.csv``, in protocol order
    (:func:`petctiqa.dataset.manifest.axis_columns`: the classic grid's three, or a protocol's
    own axes)."""
    path, reader = _manifest_reader(root)
    return axis_columns(reader.fieldnames or [], str(path))


def read_references(root: Path) -> dict[str, Path]:
    """Image path -> its reference render's path, from ``manifest.csv``; ``{}`` when the folder
    has no manifest or the manifest lacks those columns (a ratings-only folder). Rows without a
    reference are left out; a path that leaves the folder raises :class:`DatasetError`."""
    root = Path(root)
    if not DatasetFolder(root).manifest.is_file():
        return {}
    path, reader = _manifest_reader(root)
    if not {"image", "reference"} <= set(reader.fieldnames or []):
        return {}
    rows = _rows(path, reader, ("image", "reference"), allow_empty_paths=True)
    return {row["image"]: root / row["reference"] for _, row in rows if row["reference"]}


def read_dataset_info(root: Path) -> dict[str, Any] | None:
    """``dataset.json`` (the build's settings and counts) or None when the folder has none;
    unreadable JSON raises :class:`DatasetError`."""
    path = DatasetFolder(Path(root)).dataset_json
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read JSON ({exc})") from None
    return info if isinstance(info, dict) else None


def read_render_protocol(root: Path) -> dict[str, Any] | None:
    """``{"name", "render"}`` of the protocol the folder's images were rendered with, from
    ``dataset.json``; None when the folder has no ``dataset.json`` or it records no render
    settings."""
    info = read_dataset_info(root)
    settings = info.get("settings") if info is not None else None
    protocol = settings.get("protocol") if isinstance(settings, dict) else None
    render = protocol.get("render") if isinstance(protocol, dict) else None
    if not isinstance(render, dict):
        return None
    name = info.get("protocol") or protocol.get("name") or ""  # type: ignore[union-attr]
    return {"name": str(name), "render": render}
