"""The dataset manifest: one :class:`ImageRecord` per distorted image, stored as ``manifest.csv``.

Columns (in this order) are the fields of :class:`ImageRecord`. Paths are relative to the dataset
folder and use ``/``. Every image traces back to its DICOM source through the study, series and
CT SOP instance UIDs; ``sha256`` is the hex digest of the image file's bytes.
"""

from __future__ import annotations

import csv
import io
import operator
from dataclasses import dataclass, fields
from pathlib import Path

from petctiqa.atomic import atomic_write_text
from petctiqa.errors import DatasetError
from petctiqa.safe_paths import UnsafePathError, relative_inside

MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class ImageRecord:
    """One row of ``manifest.csv``: a distorted image and everything needed to reproduce it."""

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


MANIFEST_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ImageRecord))
_ROW_VALUES = operator.attrgetter(*MANIFEST_COLUMNS)
"""A record's values in column order (``dataclasses.astuple`` deep-copies: 10x slower)."""
_INT_COLUMNS = {"slice_number", "poisson_level", "gaussian_level", "jpeg_level", "jpeg_quality"}
_FLOAT_COLUMNS = {"slice_position_mm", "poisson_value", "gaussian_sigma"}
PATH_COLUMNS = frozenset({"image", "reference"})
"""Paths relative to the dataset folder: a cell such as ``../../etc/x`` is refused on reading."""


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def manifest_text(records: list[ImageRecord]) -> str:
    """The CSV text of a manifest (header + one line per record, ``\\n`` line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for record in records:
        writer.writerow([_format_value(v) for v in _ROW_VALUES(record)])
    return buffer.getvalue()


def write_manifest(path: Path, records: list[ImageRecord]) -> None:
    """Write ``records`` to ``path`` atomically."""
    atomic_write_text(path, manifest_text(records))


def _parse_row(row: dict[str, str], path: Path, line: int) -> ImageRecord:
    values: dict[str, object] = {}
    for name in MANIFEST_COLUMNS:
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
    return ImageRecord(**values)  # type: ignore[arg-type]


def read_manifest(path: Path) -> list[ImageRecord]:
    """Read ``manifest.csv``; a missing file or column raises :class:`DatasetError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: manifest not found") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DatasetError(f"{path}: manifest lacks column '{missing[0]}'")
    return [_parse_row(row, Path(path), i + 2) for i, row in enumerate(reader)]
