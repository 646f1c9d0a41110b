"""Load an image series as a 3-D volume: read the headers, sort the slices into one regular
stack (:mod:`petctiqa.dicom.geometry`, which rejects anything else with a DicomError), read the
pixels and apply the rescale.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from petctiqa.dicom.geometry import StackGeometry, slice_geometry_from_header, stack_geometry
from petctiqa.dicom.header_scan import HeaderLike, ScannedHeader, scan_header
from petctiqa.dicom.records import SeriesInfo, Volume, series_label
from petctiqa.errors import DicomError


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value-validation warnings (over-long SH values etc. in real data)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


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
