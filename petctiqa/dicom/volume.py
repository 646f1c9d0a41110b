"""Load an image series as a 3-D volume: sort slices by geometry, check it, apply the rescale.

Slices are ordered by the position of their origin (ImagePositionPatient) along the slice normal
(row cosine x column cosine from ImageOrientationPatient), never by file name or InstanceNumber.
A series whose slices do not form one regular stack (mixed orientation, mixed matrix or pixel
spacing, duplicate positions, uneven slice spacing, gantry tilt) is rejected with a DicomError.
"""

from __future__ import annotations

import contextlib
import os.path
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from petctiqa.dicom.header_scan import HeaderLike, ScannedHeader, scan_header
from petctiqa.dicom.records import SeriesInfo, SliceGeometry, Volume
from petctiqa.errors import DicomError

ORIENTATION_TOLERANCE = 1e-4
"""Largest difference between two slices' direction cosines still called 'the same'."""
SPACING_RELATIVE_TOLERANCE = 1e-3
"""Largest relative difference between two slices' pixel spacings."""
DUPLICATE_POSITION_MM = 1e-3
"""Two slices closer than this along the normal are duplicates."""
GRID_TOLERANCE_MM = 0.02
GRID_RELATIVE_TOLERANCE = 0.1
"""Slice positions may sit max(0.02 mm, 10 % of the step) off a regular grid: multi-bed PET has
slightly uneven steps at bed boundaries (STS_001: 3.19-3.29 mm around 3.27 mm, 0.04 mm off)."""
OFF_AXIS_TOLERANCE_MM = 0.1
"""Slice origins may sit this far off the line along the normal (more means tilt or shear)."""


@dataclass(frozen=True)
class StackGeometry:
    """A regular stack of slices: the sort order and the voxel-to-patient affine."""

    order: tuple[int, ...]
    """Indices into the input slices, sorted by increasing position along the normal."""
    affine: np.ndarray
    """float64 (4, 4): (column i, row j, slice k, 1) -> patient mm (LPS)."""
    positions_mm: np.ndarray
    """Sorted slice positions along the normal (mm)."""
    slice_step_mm: float
    """Mean distance between neighbouring slices (mm); the nominal thickness for one slice."""

    @property
    def slice_normal(self) -> np.ndarray:
        axis = self.affine[:3, 2]
        return axis / np.linalg.norm(axis)


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value-validation warnings (over-long SH values etc. in real data)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def series_label(series: SeriesInfo) -> str:
    """A short name for messages: modality, description and the folder holding the files."""
    folder = _common_folder(series.files)
    description = series.series_description or "no description"
    return f"{series.modality} series '{description}' in {folder}"


def _common_folder(files: Sequence[Path]) -> str:
    if not files:
        return "(no files)"
    parents = {str(Path(f).parent) for f in files}
    if len(parents) == 1:
        return parents.pop()
    return os.path.commonpath(sorted(parents))


def stack_geometry(
    label: str,
    slices: Sequence[SliceGeometry],
    single_slice_step_mm: float | None = None,
    names: Sequence[str] | None = None,
) -> StackGeometry:
    """Sort slices along their normal and check they form one regular stack.

    ``label`` names the series in error messages, ``names`` (optional, aligned with ``slices``)
    names the files. ``single_slice_step_mm`` is the slice step used when there is one slice
    (SliceThickness, default 1 mm). Raises DicomError naming the series and the problem.
    """
    # Long on purpose: the stack checks in the order they are made, each naming the file at fault.
    n = len(slices)
    if n == 0:
        raise DicomError(f"{label}: no slices")
    names = list(names) if names is not None else [s.sop_instance_uid for s in slices]

    matrices = {(s.rows, s.columns) for s in slices}
    if len(matrices) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in sorted(matrices))
        first = (slices[0].rows, slices[0].columns)
        odd = next(i for i, s in enumerate(slices) if (s.rows, s.columns) != first)
        raise DicomError(
            f"{label}: mixed image matrix (rows x columns {shown}) in one series "
            f"({names[0]}: {first[0]}x{first[1]}, {names[odd]}: "
            f"{slices[odd].rows}x{slices[odd].columns})"
        )

    orientations = np.array([s.image_orientation for s in slices], dtype=np.float64)
    if orientations.shape != (n, 6) or not np.all(np.isfinite(orientations)):
        raise DicomError(
            f"{label}: ImageOrientationPatient must hold 6 numbers ({_first_bad(names, orientations)})"
        )
    deviation = np.abs(orientations - orientations[0]).max(axis=1)
    if deviation.max() > ORIENTATION_TOLERANCE:
        worst = int(deviation.argmax())
        raise DicomError(
            f"{label}: mixed ImageOrientationPatient ({names[0]}: {_fmt(orientations[0])}, "
            f"{names[worst]}: {_fmt(orientations[worst])})"
        )
    row_dir, col_dir = orientations[0, :3], orientations[0, 3:]
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-3
        or abs(np.linalg.norm(col_dir) - 1) > 1e-3
        or abs(float(row_dir @ col_dir)) > 1e-3
    ):
        raise DicomError(
            f"{label}: ImageOrientationPatient {_fmt(orientations[0])} is not two orthogonal "
            "unit vectors"
        )
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)

    spacings = np.array([s.pixel_spacing for s in slices], dtype=np.float64)
    if not np.all(np.isfinite(spacings)) or np.any(spacings <= 0):
        bad = ~np.all(np.isfinite(spacings) & (spacings > 0), axis=1)
        k = int(bad.argmax())
        raise DicomError(
            f"{label}: PixelSpacing must be two positive numbers ({names[k]}: {_fmt(spacings[k])})"
        )
    spread = np.abs(spacings - spacings[0]).max() / spacings[0].min()
    if spread > SPACING_RELATIVE_TOLERANCE:
        raise DicomError(f"{label}: mixed PixelSpacing in one series ({_fmt(np.unique(spacings))})")

    origins = np.array([s.image_position for s in slices], dtype=np.float64)
    if origins.shape != (n, 3) or not np.all(np.isfinite(origins)):
        raise DicomError(
            f"{label}: ImagePositionPatient must hold 3 numbers ({_first_bad(names, origins)})"
        )
    along = origins @ normal
    order = np.argsort(along, kind="stable")
    positions = along[order]
    origins = origins[order]

    if n == 1:
        step = float(single_slice_step_mm) if single_slice_step_mm else 1.0
    else:
        steps = np.diff(positions)
        k = int(steps.argmin())
        if steps[k] < DUPLICATE_POSITION_MM:
            raise DicomError(
                f"{label}: duplicate slice position {positions[k]:.3f} mm along the normal "
                f"({names[order[k]]} and {names[order[k + 1]]})"
            )
        step = float((positions[-1] - positions[0]) / (n - 1))
        residual = np.abs(positions - (positions[0] + step * np.arange(n)))
        if residual.max() > max(GRID_TOLERANCE_MM, GRID_RELATIVE_TOLERANCE * step):
            worst = int(np.abs(steps - np.median(steps)).argmax())
            raise DicomError(
                f"{label}: non-uniform slice spacing (steps {steps.min():.3f}-{steps.max():.3f} mm; "
                f"slices sit up to {residual.max():.2f} mm off a regular {step:.3f} mm grid; "
                f"step {steps[worst]:.3f} mm between {positions[worst]:.2f} and "
                f"{positions[worst + 1]:.2f} mm ({names[order[worst]]} and "
                f"{names[order[worst + 1]]}): missing or extra slice?)"
            )
        offsets = origins - origins[0]
        off_axis = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
        if off_axis.max() > OFF_AXIS_TOLERANCE_MM:
            raise DicomError(
                f"{label}: slice origins drift {off_axis.max():.2f} mm off the slice normal "
                "(gantry tilt or sheared stack is not supported)"
            )

    row_spacing, column_spacing = spacings[0]
    affine = np.eye(4)
    affine[:3, 0] = row_dir * column_spacing
    affine[:3, 1] = col_dir * row_spacing
    affine[:3, 2] = normal * step
    affine[:3, 3] = origins[0]
    return StackGeometry(
        order=tuple(int(i) for i in order),
        affine=affine,
        positions_mm=positions,
        slice_step_mm=step,
    )


def _first_bad(names: Sequence[str], rows: np.ndarray) -> str:
    """``<name>: [values]`` of the first row holding a non-finite number."""
    if rows.ndim != 2:  # ragged: not even the right count of numbers
        return names[0]
    k = int((~np.all(np.isfinite(rows), axis=1)).argmax())
    return f"{names[k]}: {_fmt(rows[k])}"


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in np.ravel(values)) + "]"


def slice_geometry_from_header(ds: HeaderLike, source: str) -> SliceGeometry:
    """Read one instance's geometry tags; DicomError naming ``source`` when one is missing."""
    try:
        position = tuple(float(v) for v in ds.ImagePositionPatient)
        orientation = tuple(float(v) for v in ds.ImageOrientationPatient)
        spacing = tuple(float(v) for v in ds.PixelSpacing)
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        missing = [
            k
            for k in (
                "ImagePositionPatient",
                "ImageOrientationPatient",
                "PixelSpacing",
                "Rows",
                "Columns",
            )
            if ds.get(k) in (None, "")
        ]
        what = ", ".join(missing) if missing else str(exc)
        raise DicomError(f"{source}: missing or invalid geometry tag(s): {what}") from exc
    if len(position) != 3 or len(orientation) != 6 or len(spacing) != 2:
        raise DicomError(
            f"{source}: ImagePositionPatient/ImageOrientationPatient/PixelSpacing must hold "
            "3/6/2 numbers"
        )
    return SliceGeometry(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        image_position=position,  # type: ignore[arg-type]
        image_orientation=orientation,  # type: ignore[arg-type]
        rows=rows,
        columns=columns,
        pixel_spacing=spacing,  # type: ignore[arg-type]
    )


def series_stack_geometry(series: SeriesInfo) -> StackGeometry:
    """Geometry of an indexed series from its header records alone (no file is read)."""
    if len(series.slice_geometry) != len(series.files):
        raise DicomError(f"{series_label(series)}: no header geometry indexed for its files")
    return stack_geometry(
        series_label(series),
        series.slice_geometry,
        single_slice_step_mm=series.slice_thickness,
        names=[Path(f).name for f in series.files],
    )


LOAD_KEYWORDS = frozenset(
    {
        "SOPInstanceUID",
        "SeriesInstanceUID",
        "NumberOfFrames",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
        "RescaleSlope",
        "RescaleIntercept",
        "ModalityLUTSequence",
        # the acquisition time of every PET slice (SUV decay correction)
        "AcquisitionDateTime",
        "AcquisitionDate",
        "AcquisitionTime",
        "SeriesDate",
    }
)
"""Tags a volume needs from each slice's header (a present ModalityLUTSequence, a sequence,
sends that file to pydicom)."""


@dataclass(frozen=True)
class SortedSeries:
    """All instances of a series, sorted along the normal: their headers (the pixels are read
    by :func:`rescaled_pixels`)."""

    datasets: tuple[HeaderLike, ...]
    files: tuple[Path, ...]
    geometry: StackGeometry


def _pydicom_read(path: Path, **kwargs) -> Dataset:
    """``pydicom.dcmread`` quietly; a DicomError naming the file when it cannot be read."""
    try:
        with quiet_pydicom():
            return pydicom.dcmread(path, **kwargs)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DicomError(f"{path}: cannot read DICOM file ({exc})") from exc


def read_slice_header(path: Path) -> HeaderLike:
    """The header of one slice for loading: :func:`scan_header` for plain little-endian files
    (pixels are then read from the file by :func:`native_pixels`), else pydicom's whole file."""
    try:
        scanned = scan_header(path, LOAD_KEYWORDS)
        force = scanned is None and _needs_force(path)
    except OSError as exc:
        raise DicomError(f"{path}: cannot read DICOM file ({exc})") from exc
    if scanned is not None:
        return scanned
    return _pydicom_read(path, force=force)


def full_dataset(header: HeaderLike, stop_before_pixels: bool = False) -> Dataset:
    """A pydicom data set for ``header`` (read from its file when it is a scanned header)."""
    if isinstance(header, Dataset):
        return header
    return _pydicom_read(header.path, stop_before_pixels=stop_before_pixels)


def read_sorted_series(series: SeriesInfo) -> SortedSeries:
    """Read the header of every file of ``series`` and sort the slices by geometry."""
    label = series_label(series)
    datasets = []
    for path in series.files:
        ds = read_slice_header(path)
        if str(ds.get("SeriesInstanceUID", "")) != series.series_uid:
            raise DicomError(f"{path}: SeriesInstanceUID differs from the indexed series {label}")
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise DicomError(f"{path}: multi-frame images are not supported")
        datasets.append(ds)
    geometries = [
        slice_geometry_from_header(ds, str(p)) for ds, p in zip(datasets, series.files, strict=True)
    ]
    geometry = stack_geometry(
        label,
        geometries,
        single_slice_step_mm=series.slice_thickness,
        names=[Path(f).name for f in series.files],
    )
    return SortedSeries(
        datasets=tuple(datasets[i] for i in geometry.order),
        files=tuple(Path(series.files[i]) for i in geometry.order),
        geometry=geometry,
    )


def _needs_force(path: Path) -> bool:
    """True for a file without the 128-byte preamble + 'DICM' that starts with a raw data set."""
    with open(path, "rb") as handle:
        head = handle.read(132)
    return head[128:132] != b"DICM" and looks_like_raw_dataset(head)


def looks_like_raw_dataset(head: bytes) -> bool:
    """Whether bytes look like a DICOM data set written without preamble (ACR-NEMA style).

    Such files start with a little-endian tag of group 0x0002 or 0x0008 followed by either an
    explicit VR (two capital letters) or a 4-byte length.
    """
    if len(head) < 8 or head[0:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    length = int.from_bytes(head[4:8], "little")
    return length < 1 << 16


NATIVE_LITTLE_ENDIAN_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
"""Implicit and Explicit VR Little Endian: uncompressed pixels stored as plain LE integers."""


def native_pixels(ds: HeaderLike) -> np.ndarray | None:
    """The stored pixels of a plain uncompressed single-frame greyscale slice, read straight from
    the PixelData bytes (from the file for a scanned header), or None when pydicom's full
    decoder is needed.

    Taken only when nothing needs interpreting: little-endian native transfer syntax, one
    sample, one frame, BitsStored == BitsAllocated in (8, 16, 32) and enough bytes; the result
    equals ``ds.pixel_array`` then, for a fraction of its cost (``docs/dicom.md``, "Reading
    speed").
    """
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if syntax not in NATIVE_LITTLE_ENDIAN_SYNTAXES:
        return None
    if isinstance(ds, Dataset) and "PixelData" not in ds:
        return None
    try:
        bits = int(ds.BitsAllocated)
        signed = int(ds.PixelRepresentation)
        if (
            int(ds.get("BitsStored", bits)) != bits
            or bits not in (8, 16, 32)
            or signed not in (0, 1)
        ):
            return None
        if int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("NumberOfFrames", 1) or 1) != 1:
            return None
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    count = rows * columns
    if isinstance(ds, ScannedHeader):
        if ds.pixel_offset is None or (ds.pixel_length or 0) < count * dtype.itemsize:
            return None
        pixels = np.fromfile(ds.path, dtype, count=count, offset=ds.pixel_offset)
        return pixels.reshape(rows, columns) if pixels.size == count else None
    data = ds.PixelData
    if not isinstance(data, bytes) or len(data) < count * dtype.itemsize:
        return None
    return np.frombuffer(data, dtype, count=count).reshape(rows, columns)


def rescaled_pixels(sorted_series: SortedSeries, label: str) -> np.ndarray:
    """Stack the stored pixels as float32 with each slice's RescaleSlope/Intercept applied.

    A slice with a Modality LUT Sequence instead of slope/intercept goes through
    ``pydicom.pixels.apply_modality_lut``.
    """
    first = sorted_series.datasets[0]
    shape = (len(sorted_series.datasets), int(first.Rows), int(first.Columns))
    volume = np.empty(shape, dtype=np.float32)
    for k, (ds, path) in enumerate(zip(sorted_series.datasets, sorted_series.files, strict=True)):
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise DicomError(f"{path}: colour images are not supported ({label})")
        stored = native_pixels(ds)
        if stored is None:
            ds = full_dataset(ds)
            try:
                stored = ds.pixel_array
            except Exception as exc:  # pydicom raises many types for unsupported/corrupt data
                raise DicomError(f"{path}: cannot decode pixel data ({exc})") from exc
        if stored.shape != shape[1:]:
            raise DicomError(f"{path}: pixel data shape {stored.shape} != Rows x Columns")
        if "ModalityLUTSequence" in ds:
            volume[k] = apply_modality_lut(stored, ds)
            continue
        slope = _float_tag(ds, "RescaleSlope", 1.0, path)
        intercept = _float_tag(ds, "RescaleIntercept", 0.0, path)
        apply_rescale(stored, slope, intercept, out=volume[k])
    return volume


def apply_rescale(stored: np.ndarray, slope: float, intercept: float, out: np.ndarray) -> None:
    """``out = float32(stored * slope) + float32(intercept)`` (float32 ``out``).

    The product is taken in float64 and rounded once to float32. With slope 1 (nearly every CT)
    that product is the stored integer itself, exact in float32 for 8/16-bit data, so one
    float32 addition gives the same bits in one pass instead of two (``docs/dicom.md``).
    """
    if slope == 1.0 and stored.dtype.itemsize <= 2 and stored.dtype.kind in "iu":
        np.add(stored, np.float32(intercept), out=out, dtype=np.float32)
        return
    np.multiply(stored, slope, out=out, casting="unsafe")
    out += np.float32(intercept)


def _float_tag(ds: HeaderLike, keyword: str, default: float, path: Path) -> float:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"{path}: {keyword} {value!r} is not a number") from exc


def volume_unit(series: SeriesInfo) -> str:
    """CT -> "HU"; PET -> its Units tag (BQML, GML, ...); anything else -> its units or ""."""
    if series.modality == "CT":
        return "HU"
    return series.units


def load_volume(series: SeriesInfo) -> Volume:
    """Load a series as a Volume sorted along the slice normal, per-slice rescale applied.

    CT comes out in HU, PET in its stored unit (Units tag). float32, shape (slices, rows, cols).
    """
    sorted_series = read_sorted_series(series)
    array = rescaled_pixels(sorted_series, series_label(series))
    return Volume(
        array=array,
        affine=sorted_series.geometry.affine,
        unit=volume_unit(series),
        series=series,
        sop_instance_uids=tuple(str(ds.get("SOPInstanceUID", "")) for ds in sorted_series.datasets),
    )
