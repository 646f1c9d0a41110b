"""Index a folder tree of DICOM files into image series, from headers only.

Works on any layout (the NBIA Data Retriever's ``Subject/Study/Series/*.dcm``, flat folders,
UID-named folders): file and folder names are never interpreted, only headers. Each file is read
with ``stop_before_pixels`` and only the tags the index needs (``specific_tags``), so indexing
is bounded by disk reads. Files that are not single-frame images with patient geometry are
skipped and reported with the reason (non-DICOM, DICOMDIR, RTSTRUCT, SEG, SR, KO, PR, ...).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from petctiqa.dicom.records import DicomIndex, SeriesInfo, SkippedFile, SliceGeometry
from petctiqa.dicom.volume import (
    looks_like_raw_dataset,
    quiet_pydicom,
    slice_geometry_from_header,
)
from petctiqa.errors import DicomError

NON_IMAGE_MODALITIES: dict[str, str] = {
    "RTSTRUCT": "RT structure set",
    "RTPLAN": "RT plan",
    "RTDOSE": "RT dose grid",
    "RTRECORD": "RT treatment record",
    "RTIMAGE": "RT portal image",
    "SEG": "segmentation",
    "SR": "structured report",
    "KO": "key object selection",
    "PR": "presentation state",
    "REG": "spatial registration",
    "RWV": "real world value map",
    "DOC": "encapsulated document",
    "PLAN": "plan",
    "FID": "fiducials",
    "AU": "audio",
    "ECG": "waveform",
}
"""Modalities of objects that are not image slices, with the name used in skip reasons."""

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

INDEX_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "ImageType",
    "StudyDate",
    "StudyDescription",
    "SeriesDescription",
    "PatientID",
    "SliceThickness",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "FrameOfReferenceUID",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "PixelSpacing",
    "Units",
    "BitsAllocated",
    "SamplesPerPixel",
]
"""The only tags read while indexing (plus the file meta information)."""


@dataclass(frozen=True)
class _Instance:
    path: Path
    header: Dataset
    geometry: SliceGeometry


def list_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (following no symlinked folders), in sorted order."""
    found: list[Path] = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found.extend(Path(folder) / name for name in sorted(filenames))
    return found


def read_index_header(path: Path) -> Dataset | str:
    """Read the indexing tags of one file: the header, or the reason it is not usable.

    Files with the standard preamble are read with ``force=False``; a file without preamble is
    read only when it starts like a raw DICOM data set (little-endian group 0002/0008 tag).
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        return f"unreadable file ({exc.strerror or exc})"
    force = head[128:132] != b"DICM"
    if force and not looks_like_raw_dataset(head):
        return "not a DICOM file"
    try:
        with quiet_pydicom():
            header = pydicom.dcmread(
                path, stop_before_pixels=True, force=force, specific_tags=INDEX_TAGS
            )
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        return f"unreadable DICOM ({type(exc).__name__})"
    if force and "SOPClassUID" not in header and "Modality" not in header:
        return "not a DICOM file"
    return header


def classify_header(header: Dataset) -> str | None:
    """None when the header is a usable single-frame image slice, else the skip reason."""
    meta_class = str(getattr(header.file_meta, "MediaStorageSOPClassUID", "") or "")
    if meta_class == DICOMDIR_SOP_CLASS:
        return "DICOMDIR (media directory, not an image)"
    modality = str(header.get("Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"non-image object: {modality} ({NON_IMAGE_MODALITIES[modality]})"
    for keyword in ("SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID"):
        if not header.get(keyword):
            return f"missing {keyword}"
    if not modality:
        return "missing Modality"
    if "Rows" not in header or "Columns" not in header:
        return f"non-image object: {modality} without Rows/Columns"
    if int(header.get("NumberOfFrames", 1) or 1) > 1:
        return f"multi-frame {modality} image (not supported)"
    raw_type = header.get("ImageType") or []
    image_type = (
        [raw_type.upper()] if isinstance(raw_type, str) else [str(v).upper() for v in raw_type]
    )
    if "LOCALIZER" in image_type:
        return f"{modality} localizer (scout) image"
    if not header.get("ImagePositionPatient") or not header.get("ImageOrientationPatient"):
        return f"{modality} image without ImagePositionPatient/ImageOrientationPatient"
    if not header.get("PixelSpacing"):
        return f"{modality} image without PixelSpacing"
    return None


def truncation_reason(header: Dataset, file_size: int) -> str | None:
    """A reason when an uncompressed image file is too short to hold its pixel data."""
    syntax = getattr(header.file_meta, "TransferSyntaxUID", None)
    if syntax is not None and getattr(syntax, "is_compressed", False):
        return None
    try:
        pixel_bytes = (
            int(header.Rows)
            * int(header.Columns)
            * int(header.get("SamplesPerPixel", 1) or 1)
            * max(1, int(header.get("BitsAllocated", 16) or 16) // 8)
        )
    except (TypeError, ValueError):
        return None
    if file_size < pixel_bytes:
        return f"truncated file ({file_size} bytes, pixel data alone needs {pixel_bytes})"
    return None


def index_dicom_tree(root: Path, progress: bool = False) -> DicomIndex:
    """Index every image series under ``root`` from headers; report every file not used.

    Series are sorted by (patient_id, study_uid, series_number, series_uid); files within a
    series by path. Raises DicomError when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DicomError(f"{root}: not a folder")
    files = list_files(root)
    iterator = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, desc="index DICOM", unit="file", leave=False)

    by_series: dict[str, list[_Instance]] = defaultdict(list)
    seen_sop: dict[str, Path] = {}
    skipped: list[SkippedFile] = []
    for path in iterator:
        result = read_index_header(path)
        if isinstance(result, str):
            skipped.append(SkippedFile(path, result))
            continue
        reason = classify_header(result)
        if reason is None:
            reason = truncation_reason(result, path.stat().st_size)
        if reason is None:
            sop = str(result.SOPInstanceUID)
            if sop in seen_sop:
                reason = f"duplicate SOPInstanceUID (same instance as {seen_sop[sop]})"
        if reason is None:
            try:
                geometry = slice_geometry_from_header(result, str(path))
            except DicomError:
                reason = f"{result.Modality} image with invalid geometry tags"
        if reason is not None:
            skipped.append(SkippedFile(path, reason))
            continue
        seen_sop[str(result.SOPInstanceUID)] = path
        by_series[str(result.SeriesInstanceUID)].append(_Instance(path, result, geometry))

    series = [_series_info(uid, instances) for uid, instances in by_series.items()]
    series.sort(
        key=lambda s: (
            s.patient_id,
            s.study_uid,
            s.series_number if s.series_number is not None else -1,
            s.series_uid,
        )
    )
    return DicomIndex(series=tuple(series), skipped=tuple(skipped))


def _series_info(series_uid: str, instances: list[_Instance]) -> SeriesInfo:
    instances = sorted(instances, key=lambda inst: str(inst.path))
    first = instances[0].header
    modality = str(first.Modality).upper()
    units = "HU" if modality == "CT" else str(first.get("Units", "") or "").upper()
    try:
        series_number = (
            int(first.SeriesNumber) if first.get("SeriesNumber") not in (None, "") else None
        )
    except (TypeError, ValueError):
        series_number = None
    try:
        thickness = float(first.SliceThickness) if first.get("SliceThickness") else None
    except (TypeError, ValueError):
        thickness = None
    geometry = instances[0].geometry
    return SeriesInfo(
        patient_id=str(first.get("PatientID", "") or ""),
        study_uid=str(first.StudyInstanceUID),
        series_uid=series_uid,
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "") or ""),
        modality=modality,
        series_description=str(first.get("SeriesDescription", "") or "").strip(),
        study_description=str(first.get("StudyDescription", "") or "").strip(),
        series_number=series_number,
        rows=geometry.rows,
        columns=geometry.columns,
        pixel_spacing=geometry.pixel_spacing,
        slice_thickness=thickness,
        units=units,
        files=tuple(inst.path for inst in instances),
        study_date=str(first.get("StudyDate", "") or ""),
        slice_geometry=tuple(inst.geometry for inst in instances),
    )
