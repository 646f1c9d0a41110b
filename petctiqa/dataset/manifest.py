"""The dataset manifest: one record per distorted image, stored as ``manifest.csv``.

Columns (in this order) are the fields of :class:`ImageRecord` for the classic grid (Poisson x
Gaussian x JPEG: these columns stay what they always were). A protocol with other
``[[distortions.axes]]`` writes :class:`AxesImageRecord` rows: the same columns up to
``reference``, then per axis in protocol order ``<stem>_level`` (grid axes only: the level
index) and ``<stem>_<parameter>`` (the exact value the image was made with), then ``seed`` and
``sha256``; ``<stem>`` is the distortion's name (``<name>_<code>`` when two axes share one),
e.g. ``pet_count_reduction_level,pet_count_reduction_fraction``. Paths are relative to the dataset
folder and use ``/``. Every image traces back to its DICOM source through the study, series and
CT SOP instance UIDs; ``sha256`` is the hex digest of the image file's bytes.
"""

from __future__ import annotations

import csv
import io
import operator
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from petctiqa.atomic import atomic_write_text
from petctiqa.errors import DatasetError
from petctiqa.safe_paths import UnsafePathError, relative_inside

MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class ImageSource:
    """The columns every manifest starts with: the image and the slice it was made from."""

    image: str
    """Relative path of the image file, e.g. ``images/PHANTOM-0001_s3_p1g0j2.jpg``."""
    image_id: str
    """``<patient_id>_s<k>_<code>``; also the key of the image's random generator."""
    patient_id: str
    slice_id: str
    """``<patient_id>_s<k>``."""
    slice_number: int
    """k = 1..K, in increasing slice position."""
    slice_position_mm: float
    """Position of the CT slice along the CT slice normal (mm, DICOM patient coordinates)."""
    study_uid: str
    ct_series_uid: str
    pet_series_uid: str
    ct_sop_uid: str
    """SOPInstanceUID of the CT slice that was rendered."""
    frame_of_reference_uid: str
    reference: str
    """Relative path of the undistorted reference render (PNG)."""


@dataclass(frozen=True)
class ImageRecord(ImageSource):
    """One row of a classic ``manifest.csv``: a distorted image and everything needed to
    reproduce it."""

    poisson_level: int
    gaussian_level: int
    jpeg_level: int
    poisson_form: str
    poisson_value: float
    """Impulse form: lambda; shot form: photon peak (0 = no noise)."""
    gaussian_sigma: float
    """Standard deviation on the 0..255 scale (0 = no noise)."""
    jpeg_quality: int
    seed: int
    """Dataset seed; the image's generator is ``rng_for(seed, image_id)``."""
    sha256: str

    @property
    def parameters(self) -> dict[str, float]:
        """The image's distortion parameters by column name."""
        return {
            "poisson_value": self.poisson_value,
            "gaussian_sigma": self.gaussian_sigma,
            "jpeg_quality": float(self.jpeg_quality),
        }


@dataclass(frozen=True)
class AxisValue:
    """One axis of an :class:`AxesImageRecord`: its value column, value and level."""

    column: str
    """``<stem>_<parameter>``, e.g. ``pet_count_reduction_fraction``."""
    value: float
    level: int | None = None
    """Level index on a grid axis (written as ``<stem>_level`` before the value); None when
    the value was drawn (a continuous design)."""
    level_column: str | None = None


@dataclass(frozen=True)
class AxesImageRecord(ImageSource):
    """One row of the manifest of a protocol with its own ``[[distortions.axes]]``."""

    axes: tuple[AxisValue, ...]
    seed: int
    sha256: str

    @property
    def parameters(self) -> dict[str, float]:
        """The image's distortion parameters by column name."""
        return {axis.column: axis.value for axis in self.axes}

    def columns(self) -> tuple[str, ...]:
        middle = []
        for axis in self.axes:
            if axis.level_column is not None:
                middle.append(axis.level_column)
            middle.append(axis.column)
        return (*SOURCE_COLUMNS, *middle, "seed", "sha256")

    def values(self) -> list[object]:
        middle: list[object] = []
        for axis in self.axes:
            if axis.level_column is not None:
                middle.append(axis.level)
            middle.append(axis.value)
        return [*_SOURCE_VALUES(self), *middle, self.seed, self.sha256]


def axis_stems(axes: list[tuple[str, str]]) -> list[str]:
    """Column stems of ``(distortion, code)`` axes: the distortion's name, or
    ``<name>_<code>`` for a name that more than one axis uses."""
    names = [name for name, _ in axes]
    return [name if names.count(name) == 1 else f"{name}_{code}" for name, code in axes]


SOURCE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ImageSource))
_SOURCE_VALUES = operator.attrgetter(*SOURCE_COLUMNS)


@dataclass(frozen=True)
class AxisColumns:
    """The manifest columns of one distortion axis."""

    value: str
    """The exact parameter value, e.g. ``pet_count_reduction_fraction``, ``jpeg_quality``."""
    level: str | None
    """The level index (``<stem>_level``) of a grid axis; None for a drawn value."""


CLASSIC_AXIS_COLUMNS = (
    AxisColumns("poisson_value", "poisson_level"),
    AxisColumns("gaussian_sigma", "gaussian_level"),
    AxisColumns("jpeg_quality", "jpeg_level"),
)
"""The classic grid's axes (Poisson, Gaussian, JPEG)."""


def axis_columns(header: Sequence[str], where: str) -> tuple[AxisColumns, ...]:
    """The axes a manifest header describes, in protocol order: the classic grid's when the
    header has its three level columns, else the columns between ``reference`` and ``seed``,
    where each ``*_level`` column belongs to the value column after it. ``where`` (the file)
    names the problem in the :class:`DatasetError` of a level column without a value."""
    if all(axis.level in header for axis in CLASSIC_AXIS_COLUMNS):
        return CLASSIC_AXIS_COLUMNS
    return _middle_axes(header, where)


def _middle_axes(header: Sequence[str], where: str) -> tuple[AxisColumns, ...]:
    if "reference" not in header or "seed" not in header:
        return ()
    middle = list(header[header.index("reference") + 1 : header.index("seed")])
    axes: list[AxisColumns] = []
    level: str | None = None
    for name in middle:
        if name.endswith("_level") and level is None:
            level = name
            continue
        axes.append(AxisColumns(name, level))
        level = None
    if level is not None:
        raise DatasetError(f"{where}: column '{level}' has no value column after it")
    return tuple(axes)


MANIFEST_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ImageRecord))
_ROW_VALUES = operator.attrgetter(*MANIFEST_COLUMNS)
"""A record's values in column order (``dataclasses.astuple`` deep-copies every value, which costs more than the row itself)."""
_INT_COLUMNS = {"slice_number", "poisson_level", "gaussian_level", "jpeg_level", "jpeg_quality"}
_FLOAT_COLUMNS = {"slice_position_mm", "poisson_value", "gaussian_sigma"}
PATH_COLUMNS = frozenset({"image", "reference"})
"""Paths relative to the dataset folder: a cell such as ``../../etc/x`` is refused on reading."""


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def manifest_text(records: list[ImageRecord] | list[AxesImageRecord]) -> str:
    """The CSV text of a manifest (header + one line per record, ``\\n`` line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if records and isinstance(records[0], AxesImageRecord):
        header = records[0].columns()
        writer.writerow(header)
        for record in records:
            if record.columns() != header:  # type: ignore[union-attr]
                raise ValueError(f"manifest rows differ in columns: {record.image}")
            writer.writerow([_format_value(v) for v in record.values()])  # type: ignore[union-attr]
        return buffer.getvalue()
    writer.writerow(MANIFEST_COLUMNS)
    for record in records:
        writer.writerow([_format_value(v) for v in _ROW_VALUES(record)])
    return buffer.getvalue()


def write_manifest(path: Path, records: list[ImageRecord] | list[AxesImageRecord]) -> None:
    """Write ``records`` to ``path`` atomically."""
    atomic_write_text(path, manifest_text(records))


def _parse_row(row: dict[str, str], path: Path, line: int, columns: tuple[str, ...] = ()):
    """An :class:`ImageRecord`; with ``columns``, only those columns' values (a dict)."""
    values: dict[str, object] = {}
    for name in columns or MANIFEST_COLUMNS:
        raw = row[name]
        try:
            if name in _INT_COLUMNS or name == "seed":
                values[name] = int(raw)
            elif name in _FLOAT_COLUMNS:
                values[name] = float(raw)
            elif name in PATH_COLUMNS:
                values[name] = relative_inside(raw, f"{path}: line {line}: column '{name}'")
            else:
                values[name] = raw
        except UnsafePathError as exc:
            raise DatasetError(str(exc)) from None
        except (TypeError, ValueError):
            raise DatasetError(
                f"{path}: line {line}: column '{name}' has bad value {raw!r}"
            ) from None
    if columns:
        return values
    return ImageRecord(**values)  # type: ignore[arg-type]


def read_manifest(path: Path) -> list[ImageRecord] | list[AxesImageRecord]:
    """Read ``manifest.csv`` (classic or axes columns, see the module docstring); a missing
    file or column raises :class:`DatasetError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: manifest not found") from None
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    # ``poisson_form`` is the classic grid's alone (axes columns end in _level or _<parameter>,
    # and may reuse other classic names such as jpeg_quality)
    classic = "poisson_form" in header
    missing = [
        c
        for c in (MANIFEST_COLUMNS if classic else (*SOURCE_COLUMNS, "seed", "sha256"))
        if c not in header
    ]
    if missing:
        raise DatasetError(f"{path}: manifest lacks column '{missing[0]}'")
    if classic:
        return [_parse_row(row, Path(path), i + 2) for i, row in enumerate(reader)]
    columns = _middle_axes(header, str(path))
    return [_parse_axes_row(row, columns, Path(path), i + 2) for i, row in enumerate(reader)]


def axis_values(
    row: dict[str, str], columns: Sequence[AxisColumns], where: str
) -> tuple[AxisValue, ...]:
    """The :class:`AxisValue` of every axis in ``columns`` from one manifest row's text;
    ``where`` (file and line) names the bad cell in the :class:`DatasetError`."""
    axes: list[AxisValue] = []
    for axis in columns:
        level, name = None, axis.level or axis.value
        try:
            if axis.level is not None:
                level, name = int(row[axis.level]), axis.value
            value = float(row[name])
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: column '{name}' has bad value {row[name]!r}") from None
        axes.append(AxisValue(axis.value, value, level, axis.level))
    return tuple(axes)


def _parse_axes_row(
    row: dict[str, str], columns: tuple[AxisColumns, ...], path: Path, line: int
) -> AxesImageRecord:
    """An :class:`AxesImageRecord` of the axes :func:`axis_columns` found."""
    source = _parse_row(row, path, line, SOURCE_COLUMNS)
    axes = axis_values(row, columns, f"{path}: line {line}")
    try:
        seed = int(row["seed"])
    except (TypeError, ValueError):
        raise DatasetError(
            f"{path}: line {line}: column 'seed' has bad value {row['seed']!r}"
        ) from None
    return AxesImageRecord(**source, axes=axes, seed=seed, sha256=row["sha256"])
