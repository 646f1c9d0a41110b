"""Index a folder tree of DICOM files into image series, from headers only.

Works on any layout (the NBIA Data Retriever's ``Subject/Study/Series/*.dcm``, flat folders,
UID-named folders): file and folder names are never interpreted, only headers. Each header is
read up to the pixel data, keeping only the tags the index needs: by
:func:`petctiqa.dicom.header_scan.scan_header` (a fast path) when the file is plain
little-endian DICOM, else by pydicom (``stop_before_pixels``, ``specific_tags``; both give the
same values). Files that are not single-frame images with patient geometry are
skipped and reported with the reason (non-DICOM, DICOMDIR, RTSTRUCT, SEG, SR, KO, PR, ...).
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from petctiqa.dicom.geometry import slice_geometry_from_header
from petctiqa.dicom.header_scan import HeaderLike, scan_header
from petctiqa.dicom.records import DicomIndex, SeriesInfo, SkippedFile, SliceGeometry
from petctiqa.dicom.volume import looks_like_raw_dataset, quiet_pydicom
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

NOT_DICOM = "not a DICOM file"
EMPTY_FILE = "empty file (0 bytes)"
NBIA_METADATA_NAME = "metadata.csv"
"""The table the NBIA Data Retriever (and ``petctiqa fetch``) writes at the top of a download."""
FETCH_RECORD_NAME = ".petctiqa-fetch-verified.json"
"""The file sizes and hashes ``petctiqa fetch`` keeps at the top of a download."""

HEADER_DAMAGE_REASONS = (
    "missing SeriesInstanceUID",
    "missing StudyInstanceUID",
    "missing SOPInstanceUID",
    "missing Modality",
)
"""Skip reasons of a DICOM file whose header lacks the identifying tags every image carries:
usually a damaged (e.g. cut) header. The file is harmless on its own, but when it belonged to a
series, that series misses a slice."""

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
INDEX_KEYWORDS = frozenset(INDEX_TAGS)


@dataclass(frozen=True)
class SeriesFacts:
    """The series-level tags of one instance (the first file of a series supplies its series's)."""

    patient_id: str
    study_uid: str
    frame_of_reference_uid: str
    modality: str
    series_description: str
    study_description: str
    series_number: int | None
    slice_thickness: float | None
    units: str
    study_date: str


@dataclass(frozen=True)
class IndexedFile:
    """What indexing learnt from one file's header (small and picklable, for worker processes).

    ``reason`` is why the file is not used (None: a usable image slice, unless a file earlier in
    the walk has the same SOPInstanceUID, which only the caller can tell).
    """

    path: Path
    reason: str | None
    sop_uid: str = ""
    series_uid: str = ""
    facts: SeriesFacts | None = None
    geometry: SliceGeometry | None = None
    geometry_problem: str | None = None
    """Why the geometry tags are unusable (reported unless the file is a duplicate)."""


def list_files(root: Path) -> list[Path]:
    """Every file name under ``root`` (following no symlinked folders), in sorted order; FIFOs,
    sockets, devices and symlinks that lead nowhere are among them (:func:`index_file` skips
    them without opening them)."""
    found: list[Path] = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found.extend(Path(folder) / name for name in sorted(filenames))
    return found


def read_index_header(path: Path) -> HeaderLike | str:
    """Read the indexing tags of one file: the header, or the reason it is not usable.

    Plain little-endian files are read by :func:`scan_header`, the others by pydicom. Files with
    the standard preamble are read with ``force=False``; a file without preamble is read only
    when it starts like a raw DICOM data set (little-endian group 0002/0008 tag).
    """
    try:
        scanned = scan_header(path, INDEX_KEYWORDS)
        if scanned is not None:
            return scanned
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        return f"unreadable file ({exc.strerror or exc})"
    force = head[128:132] != b"DICM"
    if force and not looks_like_raw_dataset(head):
        return NOT_DICOM
    try:
        with quiet_pydicom():
            header = pydicom.dcmread(
                path, stop_before_pixels=True, force=force, specific_tags=INDEX_TAGS
            )
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        return f"unreadable DICOM ({type(exc).__name__})"
    if force and "SOPClassUID" not in header and "Modality" not in header:
        return NOT_DICOM
    return header


def classify_header(header: HeaderLike) -> str | None:
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


def truncation_reason(header: HeaderLike, file_size: int) -> str | None:
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


def series_facts(header: HeaderLike) -> SeriesFacts:
    """The series-level tags of a usable image header (see :func:`classify_header`)."""
    modality = str(header.Modality).upper()
    try:
        series_number = (
            int(header.SeriesNumber) if header.get("SeriesNumber") not in (None, "") else None
        )
    except (TypeError, ValueError):
        series_number = None
    try:
        thickness = float(header.SliceThickness) if header.get("SliceThickness") else None
    except (TypeError, ValueError):
        thickness = None
    return SeriesFacts(
        patient_id=str(header.get("PatientID", "") or ""),
        study_uid=str(header.StudyInstanceUID),
        frame_of_reference_uid=str(header.get("FrameOfReferenceUID", "") or ""),
        modality=modality,
        series_description=str(header.get("SeriesDescription", "") or "").strip(),
        study_description=str(header.get("StudyDescription", "") or "").strip(),
        series_number=series_number,
        slice_thickness=thickness,
        units="HU" if modality == "CT" else str(header.get("Units", "") or "").upper(),
        study_date=str(header.get("StudyDate", "") or ""),
    )


def special_file_reason(path: Path) -> str | int:
    """The size of a regular file (or of the one a symlink points to), else why it is not read:
    a FIFO, socket or device would block or never end, a symlink loop or a broken link cannot
    be opened (:data:`SPECIAL_FILE_REASONS`)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop (not followed)"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return "broken symlink"
        return f"unreadable file ({exc.strerror or exc})"
    if stat.S_ISREG(info.st_mode):
        return info.st_size
    kind = next((name for test, name in _SPECIAL_KINDS if test(info.st_mode)), "special file")
    return f"not a regular file ({kind}, not read)"


_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISDIR, "folder"),
)
SPECIAL_FILE_REASONS = ("not a regular file", "symlink loop", "broken symlink")
"""Starts of the skip reasons of :func:`special_file_reason` (reported one line per file)."""


def index_file(path: Path) -> IndexedFile:
    """Read and classify one file's header (pure: the same file always gives the same result).
    Only regular files are opened (a FIFO would block the read forever)."""
    size = special_file_reason(path)
    if isinstance(size, str):
        return IndexedFile(path, size)
    if size == 0:  # said plainly: "not a DICOM file" hides a slice that lost all its bytes
        return IndexedFile(path, EMPTY_FILE)
    header = read_index_header(path)
    if isinstance(header, str):
        return IndexedFile(path, header)
    reason = classify_header(header)
    if reason is None:
        reason = truncation_reason(header, size)
    if reason is not None:
        return IndexedFile(path, reason)
    geometry: SliceGeometry | None = None
    problem = None
    try:
        geometry = slice_geometry_from_header(header, str(path))
    except DicomError:
        problem = f"{header.Modality} image with invalid geometry tags"
    return IndexedFile(
        path,
        None,
        sop_uid=str(header.SOPInstanceUID),
        series_uid=str(header.SeriesInstanceUID),
        facts=series_facts(header),
        geometry=geometry,
        geometry_problem=problem,
    )


def index_files(paths: Sequence[Path]) -> list[IndexedFile]:
    """:func:`index_file` for each path, in order (one task for a worker process)."""
    return [index_file(path) for path in paths]


INDEX_CHUNK_FILES = 64
"""Files per worker task when indexing in parallel (amortises the inter-process round trip)."""


def _index_files(files: list[Path], progress: bool, jobs: int) -> Iterator[IndexedFile]:
    """:func:`index_file` of every file, in the order of ``files``, serially or in a pool."""
    bar = tqdm(total=len(files), desc="index DICOM", unit="file", leave=False, disable=not progress)
    pool = None
    if jobs > 1 and len(files) > INDEX_CHUNK_FILES:
        # spawn, never fork: a forked child can inherit locked OpenCV/OpenMP thread pools
        pool = ProcessPoolExecutor(
            max_workers=jobs, mp_context=multiprocessing.get_context("spawn")
        )
    try:
        if pool is None:
            for path in files:
                yield index_file(path)
                bar.update(1)
            return
        chunks = [files[i : i + INDEX_CHUNK_FILES] for i in range(0, len(files), INDEX_CHUNK_FILES)]
        for chunk in pool.map(index_files, chunks):
            yield from chunk
            bar.update(len(chunk))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def index_dicom_tree(root: Path, progress: bool = False, jobs: int = 1) -> DicomIndex:
    """Index every image series under ``root`` from headers; report every file not used.

    Series are sorted by (patient_id, study_uid, series_number, series_uid); files within a
    series by path. Raises DicomError when ``root`` is not a folder.

    Headers are parsed in a "spawn" process pool of ``jobs`` workers when ``jobs`` > 1 (the
    result does not depend on it), else in this process (faster on few cores: the pool's start
    and shipping the results back cost more than the parsing; figures in docs/dataset.md).
    """
    root = Path(root)
    if not root.is_dir():
        raise DicomError(f"{root}: not a folder")
    files = list_files(root)
    by_series: dict[str, list[IndexedFile]] = defaultdict(list)
    seen_sop: dict[str, Path] = {}
    skipped: list[SkippedFile] = []
    for item in _index_files(files, progress, jobs):
        reason = item.reason
        if reason is None and item.sop_uid in seen_sop:
            reason = f"duplicate SOPInstanceUID (same instance as {seen_sop[item.sop_uid]})"
        if reason is None:
            reason = item.geometry_problem
        if reason is not None:
            skipped.append(SkippedFile(item.path, reason))
            continue
        seen_sop[item.sop_uid] = item.path
        by_series[item.series_uid].append(item)

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


def _series_info(series_uid: str, instances: list[IndexedFile]) -> SeriesInfo:
    instances = sorted(instances, key=lambda inst: str(inst.path))
    first = instances[0].facts
    geometry = instances[0].geometry
    assert first is not None and geometry is not None  # usable files always carry both
    return SeriesInfo(
        patient_id=first.patient_id,
        study_uid=first.study_uid,
        series_uid=series_uid,
        frame_of_reference_uid=first.frame_of_reference_uid,
        modality=first.modality,
        series_description=first.series_description,
        study_description=first.study_description,
        series_number=first.series_number,
        rows=geometry.rows,
        columns=geometry.columns,
        pixel_spacing=geometry.pixel_spacing,
        slice_thickness=first.slice_thickness,
        units=first.units,
        files=tuple(inst.path for inst in instances),
        study_date=first.study_date,
        slice_geometry=tuple(inst.geometry for inst in instances),  # type: ignore[misc]
    )


def is_nbia_metadata(item: SkippedFile) -> bool:
    """True for the ``metadata.csv`` a TCIA/NBIA download holds, or fetch's record (expected,
    not a problem)."""
    names = (NBIA_METADATA_NAME, FETCH_RECORD_NAME)
    return item.path.name.lower() in names and item.reason == NOT_DICOM


def skipped_by_reason(skipped: Iterable[SkippedFile]) -> list[tuple[str, list[Path]]]:
    """Skipped files grouped by reason: ``(reason, paths)``, most frequent reason first (then by
    reason), paths in walk order."""
    groups: dict[str, list[Path]] = {}
    for item in skipped:
        groups.setdefault(item.reason, []).append(item.path)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def describe_skipped(skipped: Sequence[SkippedFile], root: Path | None = None) -> str:
    """Counts per reason with one example each, most frequent first, e.g. ``2 not a DICOM file
    (e.g. a.txt), 1 non-image object: RTSTRUCT (RT structure set) (e.g. RT/1-1.dcm)``; example
    paths are relative to ``root`` when they lie under it."""

    def shown(path: Path) -> str:
        if root is not None:
            try:
                return path.relative_to(root).as_posix()
            except ValueError:
                pass
        return str(path)

    return ", ".join(
        f"{len(paths)} {reason} (e.g. {shown(paths[0])})"
        for reason, paths in skipped_by_reason(skipped)
    )
