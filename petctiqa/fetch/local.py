"""Series on disk: read and check a fetched series folder with :mod:`petctiqa.dicom`, and
install a downloaded series zip into its folder.

A series is accepted when every ``.dcm`` file is a usable image slice as ``petctiqa.dicom``
indexes it (the reasons it skips a file: not DICOM, a damaged header, missing geometry, a
truncated file, a repeated SOPInstanceUID, ...), all files form one series with the listed
SeriesInstanceUID and count, the series has a FrameOfReferenceUID, and (for new files) every
file holds its whole pixel data. The pair check is :func:`petctiqa.dicom.pairing.pair_problem`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from petctiqa.dicom.header_scan import ScannedHeader, scan_header
from petctiqa.dicom.index import NOT_DICOM, index_dicom_tree
from petctiqa.dicom.pairing import pair_problem
from petctiqa.dicom.records import SeriesInfo
from petctiqa.dicom.volume import looks_like_raw_dataset, read_slice_header
from petctiqa.errors import DicomError
from petctiqa.fetch.layout import series_directory, staging_name
from petctiqa.fetch.records import (
    FileDigest,
    SeriesRecord,
    SeriesRecords,
    digest_bytes,
    digest_file,
    record_problem,
)
from petctiqa.safe_paths import safe_component
from petctiqa.tcia_client import RemoteSeries

_METADATA_KEYWORDS = frozenset({"SOPClassUID", "Manufacturer"})


class SeriesCheckFailed(Exception):
    """A downloaded or existing series failed verification (the message says why)."""


@dataclass(frozen=True)
class LocalSeries:
    """A series verified on disk."""

    remote: RemoteSeries
    directory: Path
    info: SeriesInfo
    """The series as :mod:`petctiqa.dicom` indexes it (files, geometry, frame of reference)."""
    sop_class_uid: str
    manufacturer: str
    total_bytes: int
    downloaded: bool
    """True when this run downloaded it, False when it was already complete on disk."""

    @property
    def files(self) -> tuple[Path, ...]:
        return self.info.files

    @property
    def frame_of_reference_uid(self) -> str:
        return self.info.frame_of_reference_uid


def pairing_problem(pet: LocalSeries, ct: LocalSeries) -> str | None:
    """Why a downloaded PET and CT are not a pair (None when they are)."""
    return pair_problem(pet.info, ct.info)


def read_series_folder(
    directory: Path, series: RemoteSeries, *, check_pixels: bool, downloaded: bool = False
) -> LocalSeries:
    """The series in ``directory``, checked (see the module doc); SeriesCheckFailed otherwise.
    ``check_pixels`` also checks each file's pixel data length (files not vouched for by a
    record)."""
    try:
        index = index_dicom_tree(directory)
    except DicomError as exc:
        raise SeriesCheckFailed(str(exc)) from exc
    for item in index.skipped:
        if item.reason == NOT_DICOM and not item.path.name.lower().endswith(".dcm"):
            continue  # a stray non-DICOM file (notes, licence): not part of the series
        raise SeriesCheckFailed(_skip_message(item.path.name, item.reason))
    info = _the_series(index.series, series)
    if check_pixels:
        for path in info.files:
            problem = _pixel_data_problem(path)
            if problem is not None:
                raise SeriesCheckFailed(f"{path.name}: {problem}")
    sop_class_uid, manufacturer = _metadata_tags(info.files[0])
    return LocalSeries(
        remote=series,
        directory=directory,
        info=info,
        sop_class_uid=sop_class_uid,
        manufacturer=manufacturer or series.manufacturer,
        total_bytes=sum(f.stat().st_size for f in info.files),
        downloaded=downloaded,
    )


def _skip_message(name: str, reason: str) -> str:
    if reason == NOT_DICOM or reason.startswith("unreadable"):
        return f"{name} is not readable DICOM ({reason})"
    if reason.startswith("duplicate SOPInstanceUID"):
        return f"SOPInstanceUIDs are missing or repeated ({name}: {reason})"
    if reason.startswith("truncated"):
        return f"{name} is a {reason}"
    return f"{name} has missing or malformed image tags ({reason})"


def _the_series(indexed: tuple[SeriesInfo, ...], series: RemoteSeries) -> SeriesInfo:
    """The one indexed series, checked against the listing."""
    wrong = [s for s in indexed if s.series_uid != series.series_uid]
    if wrong:
        raise SeriesCheckFailed(
            f"{wrong[0].n_slices} file(s) belong to series {wrong[0].series_uid}, "
            f"not {series.series_uid}"
        )
    count = sum(s.n_slices for s in indexed)
    if count != series.image_count:
        raise SeriesCheckFailed(
            f"{count} DICOM files, the server lists {series.image_count} images"
        )
    if not indexed[0].frame_of_reference_uid:
        raise SeriesCheckFailed("FrameOfReferenceUID is missing")
    return indexed[0]


def _pixel_data_problem(path: Path) -> str | None:
    """Why the file cannot hold its whole (uncompressed) pixel data; None when it does."""
    try:
        header = read_slice_header(path)
    except DicomError as exc:
        return str(exc)
    syntax = getattr(header.file_meta, "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        return None  # encapsulated frames: the zip CRC is the check
    frames = int(header.get("NumberOfFrames", 1) or 1)
    bits = int(header.get("BitsAllocated", 16) or 16)
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    expected = int(header.Rows) * int(header.Columns) * samples * bits // 8 * frames
    if isinstance(header, ScannedHeader):
        if header.pixel_offset is None:
            return "no pixel data"
        size = path.stat().st_size
        available = min(header.pixel_length or 0, size - header.pixel_offset)
    else:
        available = len(header.PixelData) if "PixelData" in header else 0
    if available < expected:
        return f"{available} bytes of pixel data, expected {expected}"
    return None


def _metadata_tags(path: Path) -> tuple[str, str]:
    """(SOPClassUID, Manufacturer) of one file, for metadata.csv."""
    header = scan_header(path, _METADATA_KEYWORDS) or read_slice_header(path)
    return str(header.get("SOPClassUID", "") or ""), str(header.get("Manufacturer", "") or "")


# -- series already on disk -------------------------------------------------------------------


def count_dicom_files(directory: Path) -> int:
    """Number of ``*.dcm`` files directly in ``directory`` (0 if it does not exist)."""
    return sum(1 for _ in directory.glob("*.dcm")) if directory.is_dir() else 0


def looks_complete(out_dir: Path, series: RemoteSeries, records: SeriesRecords) -> bool:
    """A cheap guess for planning: the recorded files with their sizes (or, without a record,
    as many ``.dcm`` files as the server lists). :func:`scan_complete_series` decides."""
    directory = series_directory(out_dir, series)
    record = records.get(series.series_uid)
    if record is not None:
        return record_problem(directory, record, hashes=False) is None
    return count_dicom_files(directory) == series.image_count


def scan_complete_series(
    out_dir: Path, series: RemoteSeries, records: SeriesRecords
) -> tuple[LocalSeries | None, str | None]:
    """The series as already on disk, if complete, else ``(None, why)`` (why is None when
    there is no folder at all). With a record, every file must have its recorded size and
    SHA-256; without one (an older download), every file's pixel data is checked too and the
    series is recorded when it passes."""
    directory = series_directory(out_dir, series)
    if not directory.is_dir():
        return None, None
    record = records.get(series.series_uid)
    if record is not None:
        problem = record_problem(directory, record)
        if problem is not None:
            return None, problem
    try:
        local = read_series_folder(directory, series, check_pixels=record is None)
    except SeriesCheckFailed as exc:
        return None, str(exc)
    if record is None:
        relative = directory.relative_to(out_dir).as_posix()
        records.put(series.series_uid, SeriesRecord(relative, _digests(local.files)))
    return local, None


def _digests(files: tuple[Path, ...]) -> dict[str, FileDigest]:
    return {f.name: digest_file(f) for f in files}


# -- installing a downloaded zip --------------------------------------------------------------


def install_series_zip(
    zip_path: Path,
    series: RemoteSeries,
    final_dir: Path,
    staging_dir: Path,
    records: SeriesRecords | None = None,
) -> LocalSeries:
    """Verify a downloaded series zip and move its DICOM files into ``final_dir``.

    Every member is read (zip CRC checked); members that are not DICOM and not named ``*.dcm``
    (a LICENSE text, say) are left out; member names are made safe. Files are written to a
    temporary folder in ``staging_dir`` (same file system), checked there, and that folder
    replaces ``final_dir`` only when every check passed; then the files' sizes and SHA-256 go
    into ``records``. Raises SeriesCheckFailed otherwise, leaving nothing behind.
    """
    tmp_dir = Path(tempfile.mkdtemp(prefix=f"{staging_name(series.series_uid)}.", dir=staging_dir))
    try:
        digests = _unpack(zip_path, tmp_dir)
        checked = read_series_folder(tmp_dir, series, check_pixels=True, downloaded=True)
        if records is not None:  # the old record must not vouch for the new files
            records.drop(series.series_uid)
        _replace_folder(final_dir, tmp_dir, staging_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    if records is not None:
        relative = final_dir.relative_to(staging_dir.parent).as_posix()
        records.put(series.series_uid, SeriesRecord(relative, digests))
    files = tuple(final_dir / f.name for f in checked.files)
    return dataclasses.replace(
        checked, directory=final_dir, info=dataclasses.replace(checked.info, files=files)
    )


def _replace_folder(final_dir: Path, new_dir: Path, staging_dir: Path) -> None:
    """Put ``new_dir`` in the place of ``final_dir`` (an incomplete earlier copy is moved aside
    first, then deleted)."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    if final_dir.exists():
        stale = Path(tempfile.mkdtemp(prefix="stale.", dir=staging_dir))
        os.replace(final_dir, stale / "series")
        shutil.rmtree(stale)
    os.replace(new_dir, final_dir)


def _unpack(zip_path: Path, tmp_dir: Path) -> dict[str, FileDigest]:
    """Write the DICOM members of the zip into ``tmp_dir``; their names and digests."""
    digests: dict[str, FileDigest] = {}
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise SeriesCheckFailed(f"not a valid zip: {exc}") from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            try:
                data = archive.read(info)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise SeriesCheckFailed(f"zip member {info.filename} is corrupt: {exc}") from exc
            base_name = Path(info.filename.replace("\\", "/")).name
            if not base_name.lower().endswith(".dcm") and not _looks_like_dicom(data):
                continue  # a text file shipped with the series (e.g. LICENSE)
            name = _installed_name(base_name, set(digests))
            (tmp_dir / name).write_bytes(data)
            digests[name] = digest_bytes(data)
    return digests


def _looks_like_dicom(data: bytes) -> bool:
    return data[128:132] == b"DICM" or looks_like_raw_dataset(data[:132])


def _installed_name(base_name: str, taken: set[str]) -> str:
    """A safe, unique ``.dcm`` file name for a zip member (its name when already safe)."""
    name = safe_component(base_name)
    if not name.lower().endswith(".dcm"):
        name += ".dcm"
    if name in taken:
        name = f"{Path(name).stem}-{len(taken)}.dcm"
    return name
