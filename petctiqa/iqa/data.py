"""Rated-image datasets for IQA training: every supported layout becomes one list of :class:`IqaSample`.

Layouts (detected by :func:`load_iqa_dataset`):

- ``build-dataset`` folder: ``mos.csv`` (+ ``split.csv``, ``manifest.csv`` for references, the
  recorded parameters and which columns are the protocol's levels) and ``images/``; group =
  ``patient_id``, split from ``mos.csv``/``split.csv``; levels from ``mos.csv``'s level columns
  of every axis (none for a continuous design, whose baseline is a parameter regression).
- PET-CT-IQA-DS release folder: ``label.txt`` with ``name,mos`` lines and the images in the folder
  itself or in ``test/``, ``train/`` or ``images/``; groups and distortion levels from
  ``groups.csv`` (image, patient, slice, poisson_level, gaussian_level, jpeg_level) when present,
  otherwise each image is its own group. Split from ``train/``/``test/`` when both exist.
- LDCTIQAC2023 folder: ``train.json`` ``{"0000.tif": 2.8, ...}`` with float TIFF CT slices in the
  folder or in ``image/``/``images/``; each image is its own group unless ``groups.csv`` says
  otherwise (the release carries no patient IDs).
- Generic CSV: columns ``path`` (or ``image``), ``mos``, optional ``group`` (or ``patient_id``)
  and ``split``; paths are relative to the CSV's folder.

Ratings files written by ``collect-ratings export`` (``mos.csv``, or one passed as a CSV):

- rows with ``n == 0`` and an empty ``mos`` are images nobody rated yet: they are skipped with a
  :class:`DataWarning` that gives the count; any other missing or non-finite MOS is an error;
- a file that starts with the ``# SIMULATED`` banner or has a true ``simulated`` value marks the
  dataset :attr:`IqaDataset.simulated` (training refuses it unless explicitly allowed).

Without patient IDs (no ``groups.csv``, no group column) each image is its own group, so splits
are per image, not per patient: a :class:`DataWarning` says so.

Images become network inputs in :mod:`petctiqa.iqa.preprocess`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from petctiqa.dataset import folder as dataset_folder
from petctiqa.dataset.manifest import CLASSIC_AXIS_COLUMNS, read_manifest
from petctiqa.errors import DatasetError, PetctiqaWarning
from petctiqa.iqa.splits import (  # re-exported: train, folds and presets import them from here
    check_disjoint,
    check_patient_split,
    patient_folds,
    patient_split,
)

__all__ = [
    "DataWarning",
    "IqaDataset",
    "IqaSample",
    "check_disjoint",
    "check_patient_split",
    "load_iqa_dataset",
    "patient_folds",
    "patient_split",
]

CLASSIC_LEVELS = tuple(a.level for a in CLASSIC_AXIS_COLUMNS if a.level is not None)
"""``poisson_level``, ``gaussian_level``, ``jpeg_level``: the published grid's level columns."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SPLITS = ("train", "test")


class DataWarning(PetctiqaWarning):
    """Something about the data that the user must know but that does not stop the run."""


@dataclass(frozen=True)
class IqaSample:
    """One rated image. ``mos`` is on the source scale (0..4 for PET-CT-IQA-DS/LDCTIQAC2023)."""

    image: Path
    image_id: str
    mos: float
    group: str
    """The split unit: the patient ID when known, else the image itself."""
    split: str | None = None
    """"train", "test" or None (no split given by the data)."""
    levels: tuple[int, ...] | None = None
    """The grid cell's level per distortion axis, when known: (poisson, gaussian, jpeg) 0..2 for
    the published grid, a build's own axes in protocol order otherwise (e.g. ``pet-ct-lowdose``:
    misregistration, PET counts, CT dose, JPEG); None for a design with drawn values."""
    slice_id: str | None = None
    reference: Path | None = None
    """Undistorted reference render of the same slice, when known."""
    parameters: tuple[tuple[str, float], ...] | None = None
    """The image's distortion parameters as recorded in a build-dataset manifest (column,
    value), e.g. a continuous design's drawn values; None when unknown."""


@dataclass(frozen=True)
class IqaDataset:
    root: Path
    layout: str
    """"build-dataset", "pet-ct-iqa-ds", "ldctiqac2023" or "csv"."""
    samples: tuple[IqaSample, ...]
    simulated: bool = False
    """True when the ratings file says (banner or ``simulated`` column) that it holds
    simulated ratings."""
    grouped: bool = True
    """False when the data names no patients (each image is then its own group)."""
    skipped_unrated: int = 0
    """Rows of the ratings file skipped because nobody rated the image yet (n == 0)."""
    render_protocol: dict[str, Any] | None = field(default=None, compare=False)
    """For a build-dataset folder with ``dataset.json``: ``{"name", "render"}`` of the protocol
    the images were rendered with."""

    @property
    def groups(self) -> list[str]:
        return sorted({s.group for s in self.samples})

    def subset(self, groups: Iterable[str]) -> list[IqaSample]:
        wanted = set(groups)
        return [s for s in self.samples if s.group in wanted]


# ---------------------------------------------------------------------------------- loading


def load_iqa_dataset(path: str | Path) -> IqaDataset:
    """Detect the layout of ``path`` and read it (see the module docstring)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _load_generic_csv(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: not a folder or .csv file")
    if dataset_folder.DatasetFolder(path).mos.is_file():
        return _load_build_dataset(path)
    if (path / "label.txt").is_file():
        return _load_petct_release(path)
    if (path / "train.json").is_file():
        return _load_ldctiqac(path)
    if (path / "manifest.csv").is_file():
        raise DatasetError(
            f"{path}: a build-dataset folder without ratings (no mos.csv yet). Rate it with "
            "`petctiqa collect-ratings serve` and write mos.csv with `collect-ratings export`, "
            "or, for a pilot run only, simulate raters with `collect-ratings simulate` then "
            "`collect-ratings export` (training on them then needs allow_simulated)",
            setting="allow_simulated",
        )
    raise DatasetError(
        f"{path}: no mos.csv (build-dataset), label.txt (PET-CT-IQA-DS), train.json "
        "(LDCTIQAC2023) found; pass one of these folders or a CSV with path,mos[,group]"
    )


def _finish(
    root: Path,
    layout: str,
    samples: list[IqaSample],
    *,
    simulated: bool = False,
    grouped: bool = True,
    group_hint: str = "",
    skipped: tuple[Path, int] | None = None,
    render_protocol: dict[str, Any] | None = None,
) -> IqaDataset:
    if skipped is not None and skipped[1]:
        warnings.warn(
            f"{skipped[0]}: skipped {skipped[1]} unrated image(s) (n = 0, empty mos); "
            f"using the {len(samples)} rated one(s)",
            DataWarning,
            stacklevel=3,
        )
    if not samples:
        raise DatasetError(f"{root}: no rated images found")
    missing = [s.image for s in samples if not s.image.is_file()]
    if missing:
        raise DatasetError(f"{missing[0]}: image listed in {root} does not exist")
    check_patient_split(samples)
    if not grouped:
        warnings.warn(
            f"{root}: no patient IDs ({group_hint}), so each image is its own group: train/test "
            "splits and cross-validation folds are per IMAGE, not by patient, and images of one "
            "patient or slice can be on both sides (optimistic test metrics)",
            DataWarning,
            stacklevel=3,
        )
    return IqaDataset(
        root=root,
        layout=layout,
        samples=tuple(samples),
        simulated=simulated,
        grouped=grouped,
        skipped_unrated=skipped[1] if skipped is not None else 0,
        render_protocol=render_protocol,
    )


def _mos_value(value: object, where: str) -> float:
    try:
        mos = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: mos {value!r} is not a number") from None
    if not math.isfinite(mos):
        raise DatasetError(f"{where}: mos {value!r} is not finite")
    return mos


def _unrated(frame: pd.DataFrame, row: pd.Series, where: str) -> bool:
    """True for a collect-ratings row of an image nobody rated yet (n == 0, empty mos)."""
    if "n" not in frame.columns or pd.isna(row["n"]):
        return False
    try:
        count = float(row["n"])
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: n {row['n']!r} is not a number") from None
    if count != 0:
        return False
    if not pd.isna(row["mos"]):
        raise DatasetError(f"{where}: mos {row['mos']} given for an image with n = 0 ratings")
    return True


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def _is_simulated(path: Path, frame: pd.DataFrame) -> bool:
    """The ``# SIMULATED`` banner on the first line, or any true ``simulated`` value."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except OSError:
        first = ""
    if dataset_folder.starts_with_simulated_banner(first):
        return True
    return "simulated" in frame.columns and any(_truthy(v) for v in frame["simulated"])


def _split_value(value: object, where: str) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    text = str(value).strip().lower()
    if text not in SPLITS:
        raise DatasetError(f"{where}: split {value!r} is not 'train' or 'test'")
    return text


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, comment="#", dtype={"patient_id": str, "group": str})
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read CSV ({exc})") from None


def _require(frame: pd.DataFrame, path: Path, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")


def _levels(row: pd.Series, names: Sequence[str] = CLASSIC_LEVELS) -> tuple[int, ...] | None:
    if not names or not all(n in row.index for n in names) or any(pd.isna(row[n]) for n in names):
        return None
    return tuple(int(row[n]) for n in names)


def _level_columns(root: Path) -> tuple[str, ...]:
    """The level columns of a build-dataset folder's ``mos.csv``: the manifest's axes' when
    every axis has levels, none when some axis draws its values (a continuous design), the
    classic three when there is no manifest or it names no axes (a hand-made folder)."""
    try:
        axes = dataset_folder.read_manifest_axes(root)
    except DatasetError:
        return CLASSIC_LEVELS
    if not axes:
        return CLASSIC_LEVELS
    if any(a.level is None for a in axes):
        return ()
    return tuple(a.level for a in axes if a.level is not None)


def _manifest_parameters(root: Path) -> dict[str, tuple[tuple[str, float], ...]]:
    """Image path -> its recorded distortion parameters, from a build's ``manifest.csv``; empty
    when the folder has none or one without the build's columns (a hand-made folder)."""
    try:
        records = read_manifest(dataset_folder.DatasetFolder(root).manifest)
    except DatasetError:
        return {}
    return {r.image: tuple(sorted(r.parameters.items())) for r in records}


def _load_build_dataset(root: Path) -> IqaDataset:
    mos_path = dataset_folder.DatasetFolder(root).mos
    frame = _read_csv(mos_path)
    _require(frame, mos_path, ("image", "mos", "patient_id"))
    split_of = dataset_folder.read_split(root, required=False)
    references = dataset_folder.read_references(root)
    parameters = _manifest_parameters(root)
    level_columns = _level_columns(root)
    samples = []
    skipped = 0
    for i, row in frame.iterrows():
        where = f"{mos_path}:{i + 2}"
        if _unrated(frame, row, where):
            skipped += 1
            continue
        patient = str(row["patient_id"])
        split = _split_value(row["split"], where) if "split" in frame.columns else None
        listed = split_of.get(patient)
        if split is not None and listed is not None and split != listed:
            raise DatasetError(
                f"{where}: split {split!r} for patient {patient} contradicts split.csv ({listed!r})"
            )
        rel = dataset_folder.checked_path(str(row["image"]), f"{where}: column 'image'")
        samples.append(
            IqaSample(
                image=root / rel,
                image_id=Path(rel).stem,
                mos=_mos_value(row["mos"], where),
                group=patient,
                split=split or listed,
                levels=_levels(row, level_columns),
                slice_id=str(row["slice_id"]) if "slice_id" in frame.columns else None,
                reference=references.get(rel),
                parameters=parameters.get(rel),
            )
        )
    return _finish(
        root,
        "build-dataset",
        samples,
        simulated=_is_simulated(mos_path, frame),
        skipped=(mos_path, skipped),
        render_protocol=dataset_folder.read_render_protocol(root),
    )


def _find_image(root: Path, name: str, folders: Sequence[str]) -> Path:
    for folder in ("", *folders):
        candidate = root / folder / name
        if candidate.is_file():
            return candidate
    return root / name


def _read_groups_csv(root: Path) -> dict[str, pd.Series]:
    path = root / "groups.csv"
    if not path.is_file():
        return {}
    frame = _read_csv(path)
    _require(frame, path, ("image",))
    return {str(row["image"]): row for _, row in frame.iterrows()}


def _patient_of(info: pd.Series | None, name: str) -> tuple[str, bool]:
    """(group, known): the patient from groups.csv, else the image name itself."""
    if info is not None and "patient" in info.index and not pd.isna(info["patient"]):
        return str(info["patient"]), True
    return name, False


def _load_petct_release(root: Path) -> IqaDataset:
    label_path = root / "label.txt"
    try:
        lines = label_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{label_path}: cannot read ({exc})") from None
    groups = _read_groups_csv(root)
    folder_split = (root / "train").is_dir() and (root / "test").is_dir()
    samples = []
    ungrouped = 0
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = [p.strip() for p in text.split(",")]
        where = f"{label_path}:{number}"
        if len(parts) < 2:
            raise DatasetError(f"{where}: expected 'name,mos', got {text!r}")
        if number == 1 and parts[1].lower() in ("mos", "score"):
            continue  # header line
        name = parts[0]
        image = _find_image(root, name, ("test", "train", "images"))
        info = groups.get(name)
        patient, known = _patient_of(info, name)
        ungrouped += not known
        split = None
        if folder_split and image.parent.name in SPLITS:
            split = image.parent.name
        if info is not None and "split" in info.index:
            split = _split_value(info["split"], f"{root / 'groups.csv'} ({name})")
        slice_id = None
        if info is not None and "slice" in info.index:
            slice_id = f"{patient}_{info['slice']}"
        samples.append(
            IqaSample(
                image=image,
                image_id=Path(name).stem,
                mos=_mos_value(parts[1], where),
                group=patient,
                split=split,
                levels=_levels(info) if info is not None else None,
                slice_id=slice_id,
            )
        )
    return _finish(
        root,
        "pet-ct-iqa-ds",
        _attach_level0_references(samples),
        grouped=bool(samples) and not ungrouped,
        group_hint="no groups.csv with a patient column",
    )


def _attach_level0_references(samples: list[IqaSample]) -> list[IqaSample]:
    """Where levels and slices are known, the (0, 0, 0) image of a slice is its reference
    (no noise, JPEG quality 100: the reference render of the published protocol)."""
    refs = {s.slice_id: s.image for s in samples if s.levels == (0, 0, 0) and s.slice_id}
    out = []
    for s in samples:
        if s.reference is None and s.slice_id in refs:
            s = IqaSample(**{**s.__dict__, "reference": refs[s.slice_id]})
        out.append(s)
    return out


def _load_ldctiqac(root: Path) -> IqaDataset:
    json_path = root / "train.json"
    try:
        labels = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{json_path}: cannot read JSON ({exc})") from None
    if not isinstance(labels, dict):
        raise DatasetError(f"{json_path}: expected an object {{name: score}}")
    groups = _read_groups_csv(root)
    samples = []
    ungrouped = 0
    for name, value in sorted(labels.items()):
        info = groups.get(name)
        patient, known = _patient_of(info, name)
        ungrouped += not known
        samples.append(
            IqaSample(
                image=_find_image(root, name, ("image", "images")),
                image_id=Path(name).stem,
                mos=_mos_value(value, f"{json_path} ({name})"),
                group=patient,
            )
        )
    return _finish(
        root,
        "ldctiqac2023",
        samples,
        grouped=bool(samples) and not ungrouped,
        group_hint="the release has no patient IDs; add a groups.csv with image,patient",
    )


def _load_generic_csv(path: Path) -> IqaDataset:
    frame = _read_csv(path)
    path_column = "path" if "path" in frame.columns else "image"
    _require(frame, path, (path_column, "mos"))
    group_column = next((c for c in ("group", "patient_id", "patient") if c in frame.columns), None)
    samples = []
    skipped = 0
    for i, row in frame.iterrows():
        where = f"{path}:{i + 2}"
        if _unrated(frame, row, where):
            skipped += 1
            continue
        image = Path(str(row[path_column]))
        image = image if image.is_absolute() else path.parent / image
        samples.append(
            IqaSample(
                image=image,
                image_id=image.stem,
                mos=_mos_value(row["mos"], where),
                group=str(row[group_column]) if group_column else str(row[path_column]),
                split=_split_value(row["split"], where) if "split" in frame.columns else None,
                levels=_levels(row),
            )
        )
    return _finish(
        path.parent,
        "csv",
        samples,
        simulated=_is_simulated(path, frame),
        grouped=group_column is not None,
        group_hint="no group, patient_id or patient column",
        skipped=(path, skipped),
    )
