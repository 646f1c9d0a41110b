"""Plan and run a resumable, verified download of PET/CT studies from TCIA.

Flow: :func:`plan_fetch` queries series listings and picks, per study, one PET (PT) series and a
ranked list of CT candidates; :func:`execute_fetch` downloads the series zips in parallel, verifies
them, unpacks them into the NBIA Data Retriever layout, checks each PET/CT pair on the headers and
writes ``metadata.csv``.

Choosing the CT. TCIA's series listings do not give FrameOfReferenceUID, so the CT is chosen in two
steps. Before download the CT series of the PET's study are ranked (:func:`rank_ct_candidates`):
localizers, dose reports and series of fewer than :data:`MIN_VOLUME_INSTANCES` images are dropped;
a description that names the attenuation-correction CT (AC, CTAC, PET, WB, whole body, low dose)
ranks first; then the instance count nearest the PET's (the AC CT covers the PET field with similar
slice counts); then series number and UID. After download the pair is checked on the headers
(:func:`pairing_problem`): same FrameOfReferenceUID and overlapping extent along the CT slice
normal. A CT that fails is deleted and the next candidate is fetched; a study with no matching CT
is dropped, and (without ``--patient-list``) the next qualifying patient takes its place.

Safety. Series already complete on disk (instance count equals the server's, every header
readable with the right SeriesInstanceUID) are not downloaded again. A download goes to a
temporary zip in ``<out>/.petctiqa-partial/``, is checked (zip CRCs, every member a DICOM file with
the expected SeriesInstanceUID and its pixel data, unique SOPInstanceUIDs, count equals the
server's), unpacked into a temporary folder there and renamed into place only when all checks
pass. Network errors, HTTP 429/5xx and failed checks are retried with bounded exponential backoff.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from petctiqa.atomic import atomic_write_text
from petctiqa.errors import FetchError
from petctiqa.fetch_records import (
    FileDigest,
    SeriesRecord,
    SeriesRecords,
    digest_bytes,
    digest_file,
    record_problem,
)
from petctiqa.safe_paths import inside, safe_component
from petctiqa.tcia_client import RemoteSeries, TciaClient, TransientError, ZipDownload

PARTIAL_DIR_NAME = ".petctiqa-partial"
"""Folder inside the output folder that holds downloads in progress (removed when done)."""

METADATA_COLUMNS: tuple[str, ...] = (
    "Series UID",
    "Collection",
    "3rd Party Analysis",
    "Data Description URI",
    "Subject ID",
    "Study UID",
    "Study Description",
    "Study Date",
    "Series Description",
    "Manufacturer",
    "Modality",
    "SOP Class Name",
    "SOP Class UID",
    "Number of Images",
    "File Size",
    "File Location",
    "Download Timestamp",
)
"""The 17 columns of the NBIA Data Retriever's metadata.csv, in its order."""

MIN_VOLUME_INSTANCES = 4
"""Series with fewer images are localizers or reports, never a PET or CT volume."""

_NON_AC_PET = re.compile(r"\b(nac|non[ _-]?ac|noac|uncorrected|no[ _-]?attn|mip)\b", re.IGNORECASE)
_NOT_A_CT_VOLUME = re.compile(
    r"topogram|scout|localizer|locator|surview|dose|protocol|report|screen ?save|\bmip\b",
    re.IGNORECASE,
)
_AC_CT_HINT = re.compile(
    r"\b(ac|ctac|ac[ _-]?ct|attn|attenuation|pet|wb|whole[ _-]?body|low[ _-]?dose)\b",
    re.IGNORECASE,
)
_UNSAFE_NAME_CHARS = re.compile(r'[<>:"/\\|?*^()\x00-\x1f]')


# -- choosing series (pure) -------------------------------------------------------------------


def _series_order(series: RemoteSeries) -> tuple[float, str]:
    number = series.series_number
    return (math.inf if number is None else number, series.series_uid)


def pick_pet_series(study_series: Iterable[RemoteSeries]) -> RemoteSeries | None:
    """The PET series of a study: attenuation-corrected before NAC/MIP, then most images, then
    lowest series number and UID. None when the study has no PT volume."""
    pets = [s for s in study_series if s.modality == "PT" and s.image_count >= MIN_VOLUME_INSTANCES]
    if not pets:
        return None
    return min(
        pets,
        key=lambda s: (
            bool(_NON_AC_PET.search(s.series_description)),
            -s.image_count,
            *_series_order(s),
        ),
    )


def rank_ct_candidates(
    pet: RemoteSeries, study_series: Iterable[RemoteSeries]
) -> tuple[RemoteSeries, ...]:
    """CT series of the PET's study, most likely attenuation-correction CT first (see module doc)."""
    cts = [
        s
        for s in study_series
        if s.modality == "CT"
        and s.study_uid == pet.study_uid
        and s.image_count >= MIN_VOLUME_INSTANCES
        and not _NOT_A_CT_VOLUME.search(s.series_description)
    ]

    def key(ct: RemoteSeries) -> tuple:
        count_mismatch = abs(math.log(ct.image_count / max(pet.image_count, 1)))
        return (
            not _AC_CT_HINT.search(ct.series_description),
            round(count_mismatch, 6),
            *_series_order(ct),
        )

    return tuple(sorted(cts, key=key))


@dataclass(frozen=True)
class StudyPlan:
    """One study to fetch: its PET series and the CT candidates, best first."""

    patient_id: str
    study_uid: str
    pet: RemoteSeries
    ct_candidates: tuple[RemoteSeries, ...]


@dataclass(frozen=True)
class PatientPlan:
    patient_id: str
    studies: tuple[StudyPlan, ...]


def plan_patient(patient_id: str, series: Iterable[RemoteSeries]) -> PatientPlan | None:
    """Every study of the patient that has a PET volume and at least one CT candidate; None if
    there is none. Studies are ordered by study date, then UID."""
    by_study: dict[str, list[RemoteSeries]] = {}
    for s in series:
        by_study.setdefault(s.study_uid, []).append(s)
    studies = []
    for study_uid, members in sorted(
        by_study.items(), key=lambda item: (format_study_date(item[1][0].study_date), item[0])
    ):
        pet = pick_pet_series(members)
        if pet is None:
            continue
        cts = rank_ct_candidates(pet, members)
        if cts:
            studies.append(StudyPlan(patient_id, study_uid, pet, cts))
    return PatientPlan(patient_id, tuple(studies)) if studies else None


# -- the NBIA Data Retriever layout (pure) ----------------------------------------------------


def sanitize_name(text: str, limit: int = 64) -> str:
    """A folder-name form of archive text, as the NBIA Data Retriever writes it: drops
    ``<>:"/\\|?*^()`` and control characters (spaces, double spaces included, are kept), leading
    dots and spaces, and cuts to ``limit`` characters and ``1.5 * limit`` UTF-8 bytes; "NA" if
    empty. The result is always one plain name component (never ``.``/``..``, hidden, or longer
    than a file system allows); :func:`series_directory` also checks that the path stays inside
    the output folder."""
    cleaned = _UNSAFE_NAME_CHARS.sub("", text).strip().lstrip(". ")[:limit]
    cleaned = cleaned.encode("utf-8")[: limit + limit // 2].decode("utf-8", "ignore")
    cleaned = cleaned.rstrip(" .")
    return cleaned or "NA"


def _uid_tail(uid: str) -> str:
    """The last 5 characters of a UID for folder names (a UID that is not a safe name, which a
    real UID always is, is replaced by its :func:`safe_component` form first)."""
    return safe_component(uid)[-5:]


def format_study_date(raw: str) -> str:
    """``2007-04-04``, ``2007-04-04 00:00:00.0`` or ``20070404`` -> ``04-04-2007``; "NA" if none."""
    match = re.match(r"\s*(\d{4})-?(\d{2})-?(\d{2})", raw or "")
    if not match:
        return "NA"
    year, month, day = match.groups()
    return f"{month}-{day}-{year}"


def study_folder_name(series: RemoteSeries) -> str:
    """``<MM-DD-YYYY>-NA-<StudyDescription>-<last 5 of StudyInstanceUID>``."""
    description = sanitize_name(series.study_description)
    return f"{format_study_date(series.study_date)}-NA-{description}-{_uid_tail(series.study_uid)}"


def series_folder_name(series: RemoteSeries) -> str:
    """``<SeriesNumber %.6f>-<SeriesDescription>-<last 5 of SeriesInstanceUID>``."""
    number = "NA" if series.series_number is None else f"{series.series_number:.6f}"
    description = sanitize_name(series.series_description)
    return f"{number}-{description}-{_uid_tail(series.series_uid)}"


def series_directory(out_dir: Path, series: RemoteSeries) -> Path:
    """``<out>/<Collection>/<SubjectID>/<study folder>/<series folder>``, checked to stay inside
    ``out_dir`` (UnsafePathError otherwise, e.g. through a symlink)."""
    directory = (
        Path(out_dir)
        / sanitize_name(series.collection, limit=128)
        / sanitize_name(series.patient_id, limit=128)
        / study_folder_name(series)
        / series_folder_name(series)
    )
    return inside(out_dir, directory)


def staging_name(series_uid: str) -> str:
    """The name of a series' files in the staging folder (a safe form of its UID)."""
    return safe_component(series_uid)


# -- verified series on disk ------------------------------------------------------------------


class SeriesCheckFailed(Exception):
    """A downloaded or existing series failed verification (the message says why)."""


@dataclass(frozen=True)
class LocalSeries:
    """A series verified on disk."""

    remote: RemoteSeries
    directory: Path
    files: tuple[Path, ...]
    frame_of_reference_uid: str
    sop_class_uid: str
    manufacturer: str
    slice_normal: tuple[float, float, float]
    """Unit normal of the first instance's ImageOrientationPatient (row x column)."""
    positions_mm: tuple[tuple[float, float, float], ...]
    """ImagePositionPatient of every instance that has one (mm, DICOM LPS)."""
    total_bytes: int
    downloaded: bool
    """True when this run downloaded it, False when it was already complete on disk."""


@dataclass(frozen=True)
class _InstanceFacts:
    series_uid: str
    sop_instance_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    manufacturer: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None


def _instance_facts(ds: pydicom.Dataset) -> _InstanceFacts:
    position = ds.get("ImagePositionPatient")
    orientation = ds.get("ImageOrientationPatient")
    return _InstanceFacts(
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        manufacturer=str(ds.get("Manufacturer", "")),
        position=tuple(float(v) for v in position) if position and len(position) == 3 else None,
        orientation=(
            tuple(float(v) for v in orientation) if orientation and len(orientation) == 6 else None
        ),
    )


def _check_pixel_data(ds: pydicom.Dataset, name: str) -> None:
    if "PixelData" not in ds:
        raise SeriesCheckFailed(f"{name} has no pixel data")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and not syntax.is_compressed:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = (
            int(ds.Rows)
            * int(ds.Columns)
            * int(ds.get("SamplesPerPixel", 1))
            * int(ds.BitsAllocated)
            // 8
            * frames
        )
        if len(ds.PixelData) < expected:
            raise SeriesCheckFailed(
                f"{name} has {len(ds.PixelData)} bytes of pixel data, expected {expected}"
            )


def _summarize(
    series: RemoteSeries,
    directory: Path,
    files: Sequence[Path],
    facts: Sequence[_InstanceFacts],
    total_bytes: int,
    downloaded: bool,
) -> LocalSeries:
    """Cross-instance checks (UIDs, count, one frame of reference) -> LocalSeries."""
    wrong = [f.series_uid for f in facts if f.series_uid != series.series_uid]
    if wrong:
        raise SeriesCheckFailed(
            f"{len(wrong)} file(s) belong to series {wrong[0]}, not {series.series_uid}"
        )
    if len(facts) != series.image_count:
        raise SeriesCheckFailed(
            f"{len(facts)} DICOM files, the server lists {series.image_count} images"
        )
    sop_uids = {f.sop_instance_uid for f in facts}
    if len(sop_uids) != len(facts) or "" in sop_uids:
        raise SeriesCheckFailed("SOPInstanceUIDs are missing or repeated")
    frames = {f.frame_of_reference_uid for f in facts}
    if len(frames) != 1 or "" in frames:
        raise SeriesCheckFailed(f"FrameOfReferenceUID is missing or not unique: {sorted(frames)}")
    orientation = next((f.orientation for f in facts if f.orientation), (1, 0, 0, 0, 1, 0))
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    normal = normal / (np.linalg.norm(normal) or 1.0)
    return LocalSeries(
        remote=series,
        directory=directory,
        files=tuple(files),
        frame_of_reference_uid=frames.pop(),
        sop_class_uid=facts[0].sop_class_uid,
        manufacturer=facts[0].manufacturer or series.manufacturer,
        slice_normal=(float(normal[0]), float(normal[1]), float(normal[2])),
        positions_mm=tuple(f.position for f in facts if f.position is not None),
        total_bytes=total_bytes,
        downloaded=downloaded,
    )


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
    SHA-256; without one (an older download), every file is read in full (pixel data length
    included) and the series is recorded when it passes. Headers must carry the right UIDs."""
    directory = series_directory(out_dir, series)
    if not directory.is_dir():
        return None, None
    record = records.get(series.series_uid)
    if record is not None:
        problem = record_problem(directory, record)
        if problem is not None:
            return None, problem
    files = sorted(directory.glob("*.dcm"))
    if len(files) != series.image_count:
        return None, f"{len(files)} files on disk, the server lists {series.image_count}"
    try:
        facts = [_read_instance_facts(f, full=record is None) for f in files]
        local = _summarize(
            series, directory, files, facts, sum(f.stat().st_size for f in files), False
        )
    except (OSError, InvalidDicomError, SeriesCheckFailed, ValueError) as exc:
        return None, str(exc)
    if record is None:
        relative = directory.relative_to(out_dir).as_posix()
        records.put(
            series.series_uid,
            SeriesRecord(relative, {f.name: digest_file(f) for f in files}),
        )
    return local, None


def _read_instance_facts(path: Path, full: bool) -> _InstanceFacts:
    """Header facts of one file; with ``full`` the pixel data is read and its length checked."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=not full)
        if full:
            _check_pixel_data(ds, path.name)
        return _instance_facts(ds)
    except (AttributeError, KeyError, TypeError, EOFError) as exc:
        raise SeriesCheckFailed(f"{path.name} is not a complete image: {exc}") from exc


def _member_dataset(data: bytes, name: str) -> pydicom.Dataset | None:
    """The DICOM data set of a zip member; None for a non-DICOM file not named ``.dcm``."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
        if name.lower().endswith(".dcm"):
            raise SeriesCheckFailed(f"{name} is not readable DICOM: {exc}") from exc
        return None  # a text file shipped with the series (e.g. LICENSE)
    try:
        _check_pixel_data(ds, name)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        # a required tag missing or malformed: this series fails, not the whole run
        raise SeriesCheckFailed(
            f"{name} has missing or malformed image tags ({type(exc).__name__}: {exc})"
        ) from exc
    return ds


def _installed_name(member_name: str, taken: set[str]) -> str:
    """A safe, unique ``.dcm`` file name for a zip member (its base name when already safe)."""
    name = safe_component(Path(member_name.replace("\\", "/")).name)
    if not name.lower().endswith(".dcm"):
        name += ".dcm"
    if name in taken:
        name = f"{Path(name).stem}-{len(taken)}.dcm"
    return name


def _unpack(zip_path: Path, tmp_dir: Path) -> tuple[list[_InstanceFacts], dict[str, FileDigest]]:
    """Check every member of the zip and write the DICOM ones into ``tmp_dir``."""
    facts: list[_InstanceFacts] = []
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
            ds = _member_dataset(data, Path(info.filename.replace("\\", "/")).name)
            if ds is None:
                continue
            try:
                facts.append(_instance_facts(ds))
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise SeriesCheckFailed(
                    f"{info.filename} has malformed image tags ({type(exc).__name__}: {exc})"
                ) from exc
            name = _installed_name(info.filename, set(digests))
            (tmp_dir / name).write_bytes(data)
            digests[name] = digest_bytes(data)
    return facts, digests


def install_series_zip(
    zip_path: Path,
    series: RemoteSeries,
    final_dir: Path,
    staging_dir: Path,
    records: SeriesRecords | None = None,
) -> LocalSeries:
    """Verify a downloaded series zip and move its DICOM files into ``final_dir``.

    Every member is read (zip CRC checked) and parsed as DICOM; members that are not DICOM and not
    named ``*.dcm`` (a LICENSE text, say) are left out; member names are made safe. Files are
    written to a temporary folder in ``staging_dir`` (same file system) that replaces
    ``final_dir`` only when every check passed; then the files' sizes and SHA-256 go into
    ``records``. Raises SeriesCheckFailed otherwise, leaving nothing behind.
    """
    tmp_dir = Path(tempfile.mkdtemp(prefix=f"{staging_name(series.series_uid)}.", dir=staging_dir))
    try:
        facts, digests = _unpack(zip_path, tmp_dir)
        files = sorted(final_dir / n for n in digests)
        total = sum(d.size for d in digests.values())
        local = _summarize(series, final_dir, files, facts, total, True)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        if records is not None:  # the old record must not vouch for the new files
            records.drop(series.series_uid)
        if final_dir.exists():  # an incomplete earlier copy: move it aside, then drop it
            stale = Path(tempfile.mkdtemp(prefix="stale.", dir=staging_dir))
            os.replace(final_dir, stale / "series")
            shutil.rmtree(stale)
        os.replace(tmp_dir, final_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    if records is not None:
        out_relative = final_dir.relative_to(staging_dir.parent).as_posix()
        records.put(series.series_uid, SeriesRecord(out_relative, digests))
    return local


def partial_zip_path(out_dir: Path, series_uid: str) -> Path:
    """Where the zip of a series is downloaded to (kept between runs for resuming)."""
    return Path(out_dir) / PARTIAL_DIR_NAME / f"{staging_name(series_uid)}.zip.part"


def download_series(
    client: TciaClient,
    series: RemoteSeries,
    out_dir: Path,
    on_bytes: Callable[[int], None] | None = None,
    *,
    records: SeriesRecords | None = None,
    log: Callable[[str], None] | None = None,
) -> LocalSeries:
    """Download, verify and install one series, retrying failures per ``client.retry``.

    An interrupted download continues where it stopped when the server honours HTTP Range
    (also across runs: the partial zip stays in the staging folder); otherwise it starts over
    and ``log`` says so. ``on_bytes`` follows the size of the partial zip (negative when bytes
    are discarded).
    """
    say = log or (lambda message: None)
    part = partial_zip_path(out_dir, series.series_uid)
    part.parent.mkdir(parents=True, exist_ok=True)
    final_dir = series_directory(out_dir, series)
    tally = _PartTally(on_bytes)
    tally.resync(part)  # a partial zip left by an earlier run counts as received
    policy = client.retry
    last: Exception | None = None
    for attempt in range(policy.attempts):
        try:
            result = client.download_series_zip(series.series_uid, part, tally.add)
            tally.resync(part)
            _say_resume(say, series, result)
            local = install_series_zip(part, series, final_dir, part.parent, records)
            _discard_part(part)
            return local
        except TransientError as exc:
            last = exc  # what arrived stays in the partial zip for the next attempt
        except SeriesCheckFailed as exc:
            last = exc
            _discard_part(part)  # bad bytes: the next attempt starts from zero
        tally.resync(part)
        if attempt + 1 < policy.attempts:
            client.sleep(policy.delay_s(attempt))
    raise FetchError(
        f"series {series.series_uid} ({series.patient_id}, {series.modality}) failed "
        f"{policy.attempts} attempts; last: {last}"
    )


class _PartTally:
    """Reports the size of a series' partial zip to ``on_bytes`` as deltas: bytes as they
    arrive, and a correction when bytes are discarded (a restart, a failed check)."""

    def __init__(self, on_bytes: Callable[[int], None] | None) -> None:
        self.on_bytes = on_bytes
        self.held = 0

    def add(self, n: int) -> None:
        self.held += n
        if self.on_bytes is not None:
            self.on_bytes(n)

    def resync(self, part: Path) -> None:
        size = part.stat().st_size if part.is_file() else 0
        if size != self.held:
            self.add(size - self.held)


def _say_resume(say: Callable[[str], None], series: RemoteSeries, result: ZipDownload) -> None:
    if result.resumed_from:
        say(f"series {series.series_uid}: resumed at byte {result.resumed_from}")
    elif result.discarded:
        say(
            f"series {series.series_uid}: the server does not resume downloads (no answer to "
            f"an HTTP Range request); restarted from zero, {result.discarded} bytes discarded"
        )


def _discard_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".validator").unlink(missing_ok=True)


def pairing_problem(pet: LocalSeries, ct: LocalSeries) -> str | None:
    """Why a downloaded PET and CT are not a pair (None when they are): they must share the
    FrameOfReferenceUID and overlap along the CT slice normal."""
    if pet.frame_of_reference_uid != ct.frame_of_reference_uid:
        return (
            f"FrameOfReferenceUID {ct.frame_of_reference_uid} differs from the PET's "
            f"{pet.frame_of_reference_uid}"
        )
    if not pet.positions_mm or not ct.positions_mm:
        return "ImagePositionPatient missing, cannot check the overlap"
    normal = np.asarray(ct.slice_normal)
    pet_z = np.asarray(pet.positions_mm) @ normal
    ct_z = np.asarray(ct.positions_mm) @ normal
    overlap = min(pet_z.max(), ct_z.max()) - max(pet_z.min(), ct_z.min())
    if overlap < 0:
        return (
            f"no overlap along the slice normal (PET {pet_z.min():.1f}..{pet_z.max():.1f} mm, "
            f"CT {ct_z.min():.1f}..{ct_z.max():.1f} mm)"
        )
    return None


# -- metadata.csv -----------------------------------------------------------------------------


def format_file_size(n_bytes: int) -> str:
    """The retriever's size string: decimal megabytes with two decimals (``25.96 MB``)."""
    return f"{n_bytes / 1e6:.2f} MB"


def metadata_row(local: LocalSeries, out_dir: Path) -> dict[str, str]:
    """One metadata.csv row (the 17 retriever columns) for a verified series."""
    remote = local.remote
    location = "./" + local.directory.relative_to(out_dir).as_posix()
    stamp = dt.datetime.fromtimestamp(local.directory.stat().st_mtime)
    try:
        sop_class_name = pydicom.uid.UID(local.sop_class_uid).name
    except ValueError:
        sop_class_name = ""
    return {
        "Series UID": remote.series_uid,
        "Collection": remote.collection,
        "3rd Party Analysis": remote.third_party_analysis,
        "Data Description URI": remote.collection_uri,
        "Subject ID": remote.patient_id,
        "Study UID": remote.study_uid,
        "Study Description": remote.study_description,
        "Study Date": format_study_date(remote.study_date),
        "Series Description": remote.series_description,
        "Manufacturer": local.manufacturer,
        "Modality": remote.modality,
        "SOP Class Name": sop_class_name,
        "SOP Class UID": local.sop_class_uid,
        "Number of Images": str(len(local.files)),
        "File Size": format_file_size(local.total_bytes),
        "File Location": location,
        "Download Timestamp": stamp.isoformat(timespec="milliseconds"),
    }


def write_metadata_csv(out_dir: Path, rows: Iterable[Mapping[str, str]]) -> Path:
    """Write ``<out>/metadata.csv`` atomically. Rows of an earlier metadata.csv whose series are
    not among ``rows`` are kept when their folder still exists (a tree grown over several runs)."""
    out_dir = Path(out_dir)
    path = out_dir / "metadata.csv"
    merged = {row["Series UID"]: dict(row) for row in rows}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) == METADATA_COLUMNS:
                for old in reader:
                    location = (old.get("File Location") or "").removeprefix("./")
                    if (
                        old["Series UID"] not in merged
                        and location
                        and (out_dir / location).is_dir()
                    ):
                        merged[old["Series UID"]] = old
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METADATA_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(merged.values(), key=lambda r: (r["Subject ID"], r["File Location"])):
        writer.writerow({column: row.get(column, "") for column in METADATA_COLUMNS})
    atomic_write_text(path, buffer.getvalue())
    return path


# -- planning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchPlan:
    """What :func:`execute_fetch` will download; built by :func:`plan_fetch`."""

    collection: str
    out_dir: Path
    patients: tuple[PatientPlan, ...]
    spare_patient_ids: tuple[str, ...]
    """Qualifying candidates not planned yet, in order (replacements; empty for a patient list)."""
    target_patients: int | None
    """Patients wanted (None: exactly the listed patients)."""
    download_bytes: Mapping[str, int] = field(default_factory=dict)
    """Series UID -> bytes, for the first-choice series not yet complete on disk."""
    complete_series: frozenset[str] = frozenset()
    """First-choice series already complete on disk (by instance count)."""

    @property
    def first_choice_series(self) -> tuple[RemoteSeries, ...]:
        """PET and first-ranked CT of every planned study, in plan order."""
        return tuple(
            s for p in self.patients for st in p.studies for s in (st.pet, st.ct_candidates[0])
        )

    @property
    def total_download_bytes(self) -> int:
        return sum(self.download_bytes.values())


def read_patient_list(path: Path) -> list[str]:
    """Patient IDs from a text file: one per line; blank lines and ``#`` comments ignored; the
    first comma-separated field is used (so a metadata-like CSV column 1 also works)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise FetchError(f"cannot read patient list {path}: {exc.strerror or exc}") from exc
    ids: list[str] = []
    for line in lines:
        value = line.split("#", 1)[0].split(",", 1)[0].strip()
        if value and value not in ids:
            ids.append(value)
    if not ids:
        raise FetchError(f"patient list {path} names no patient")
    return ids


def _prefer_on_disk(plan: PatientPlan, out_dir: Path, records: SeriesRecords) -> PatientPlan:
    """Move CT candidates already complete on disk to the front (stable), so a resumed run
    re-uses the CT an earlier run verified instead of re-trying rejected candidates."""

    def on_disk(s: RemoteSeries) -> bool:
        # a record means an earlier run verified (and kept) this CT, even if it is damaged now
        return records.get(s.series_uid) is not None or looks_complete(out_dir, s, records)

    studies = tuple(
        StudyPlan(
            st.patient_id,
            st.study_uid,
            st.pet,
            tuple(sorted(st.ct_candidates, key=lambda s: not on_disk(s))),
        )
        for st in plan.studies
    )
    return PatientPlan(plan.patient_id, studies)


def _plan_patients(
    client: TciaClient,
    collection: str,
    candidates: Sequence[str],
    need: int,
    pool: ThreadPoolExecutor,
    batch: int,
    out_dir: Path,
) -> tuple[list[PatientPlan], list[str], list[str]]:
    """Query candidates in order (``batch`` at a time, in parallel) until ``need`` qualify.

    Returns (plans, patients that do not qualify, candidates not examined)."""
    plans: list[PatientPlan] = []
    rejected: list[str] = []
    position = 0
    while len(plans) < need and position < len(candidates):
        chunk = list(candidates[position : position + batch])
        listings = list(pool.map(lambda pid: client.series(collection, patient_id=pid), chunk))
        for offset, (pid, listing) in enumerate(zip(chunk, listings, strict=True)):
            if len(plans) == need:
                return plans, rejected, list(candidates[position + offset :])
            plan = plan_patient(pid, listing)
            if plan is None:
                rejected.append(pid)
            else:
                plans.append(_prefer_on_disk(plan, out_dir, SeriesRecords(out_dir)))
        position += len(chunk)
    return plans, rejected, list(candidates[position:])


def _series_bytes(client: TciaClient, series: RemoteSeries) -> int:
    """The listing's FileSize; ``getSeriesSize`` (one slow request per series) only when the
    listing has no size."""
    if series.file_size is not None:
        return series.file_size
    return client.series_size(series.series_uid).total_bytes


def plan_fetch(
    client: TciaClient,
    collection: str,
    out_dir: Path,
    *,
    n_patients: int | None = None,
    patient_ids: Sequence[str] | None = None,
    workers: int = 4,
) -> FetchPlan:
    """Query the archive and decide what to download.

    Without ``patient_ids``: the patients of ``collection`` that have a PT series, in sorted
    (string) order, are examined until ``n_patients`` have a study with a PET and a CT candidate.
    With ``patient_ids``: exactly those, each of which must qualify (else FetchError).
    """
    if patient_ids is None and (n_patients is None or n_patients < 1):
        raise FetchError(f"--patients must be at least 1, got {n_patients}")
    out_dir = Path(out_dir)
    batch = max(1, workers) * 2
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        if patient_ids is not None:
            plans, rejected, _ = _plan_patients(
                client, collection, list(patient_ids), len(patient_ids), pool, batch, out_dir
            )
            if rejected:
                raise FetchError(
                    f"patient {rejected[0]} has no study with both a PET (PT) and a CT series in "
                    f"{collection} at {client.url('getSeries', {'Collection': collection})}"
                    + (f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else "")
                )
            spare: list[str] = []
            target = None
        else:
            everyone = client.patients(collection)
            if not everyone:
                raise FetchError(
                    f"collection {collection!r} has no patients at "
                    f"{client.url('getPatient', {'Collection': collection})}"
                )
            with_pet = {s.patient_id for s in client.series(collection, modality="PT")}
            candidates = sorted(set(everyone) & with_pet)
            plans, _, spare = _plan_patients(
                client, collection, candidates, n_patients, pool, batch, out_dir
            )
            target = n_patients
        first_choice = [s for p in plans for st in p.studies for s in (st.pet, st.ct_candidates[0])]
        complete = frozenset(
            s.series_uid for s in first_choice if looks_complete(out_dir, s, SeriesRecords(out_dir))
        )
        missing = [s for s in first_choice if s.series_uid not in complete]
        sizes = dict(
            zip(
                (s.series_uid for s in missing),
                pool.map(lambda s: _series_bytes(client, s), missing),
                strict=True,
            )
        )
    return FetchPlan(
        collection=collection,
        out_dir=out_dir,
        patients=tuple(plans),
        spare_patient_ids=tuple(spare),
        target_patients=target,
        download_bytes=sizes,
        complete_series=complete,
    )


def describe_plan(plan: FetchPlan, details: bool = True) -> list[str]:
    """Human-readable lines: one per series (when ``details``), then the totals."""
    lines = []
    for patient in plan.patients if details else ():
        for study in patient.studies:
            lines.append(f"{patient.patient_id}  study ...{study.study_uid[-12:]}")
            for role, s in (("PET", study.pet), ("CT ", study.ct_candidates[0])):
                state = (
                    "on disk"
                    if s.series_uid in plan.complete_series
                    else format_file_size(plan.download_bytes.get(s.series_uid, 0))
                )
                lines.append(
                    f"  {role} {s.series_description or 'NA'!s:<32} {s.image_count:>5} images"
                    f"  {state}  -> {series_directory(plan.out_dir, s).relative_to(plan.out_dir)}"
                )
            if len(study.ct_candidates) > 1:
                lines.append(
                    f"      ({len(study.ct_candidates) - 1} more CT candidate(s) if the frame of "
                    "reference does not match)"
                )
    n_studies = sum(len(p.studies) for p in plan.patients)
    lines.append(
        f"{len(plan.patients)} patient(s), {n_studies} PET/CT stud(ies): "
        f"{len(plan.download_bytes)} series to download "
        f"({format_file_size(plan.total_download_bytes)}), "
        f"{len(plan.complete_series)} already complete"
    )
    if plan.target_patients is not None and len(plan.patients) < plan.target_patients:
        lines.append(
            f"only {len(plan.patients)} of the {plan.target_patients} requested patients qualify"
        )
    return lines


# -- execution --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchedPair:
    patient_id: str
    study_uid: str
    pet: LocalSeries
    ct: LocalSeries


@dataclass(frozen=True)
class FetchReport:
    out_dir: Path
    metadata_csv: Path
    pairs: tuple[FetchedPair, ...]
    """Verified PET/CT pairs on disk, sorted by (patient_id, study_uid)."""
    downloaded_series: int
    reused_series: int
    """Series that were already complete on disk."""
    downloaded_bytes: int
    rejected_ct: tuple[tuple[str, str], ...]
    """(CT series UID, reason) of CT candidates that did not match their PET."""
    unpaired_patients: tuple[str, ...]
    """Patients dropped because no CT candidate matched the PET's frame of reference."""

    @property
    def patient_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.patient_id for p in self.pairs))


@dataclass
class _StudyState:
    plan: StudyPlan
    ct_index: int = 0
    status: str = "pending"  # pending | paired | unpaired | failed

    @property
    def ct(self) -> RemoteSeries:
        return self.plan.ct_candidates[self.ct_index]


LOCK_FILE_NAME = ".petctiqa-fetch.lock"


@contextlib.contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` for one fetch run (POSIX ``flock``; a no-op where
    ``fcntl`` is missing). A second run on the same folder fails at once with a FetchError
    instead of deleting the first run's downloads in progress. The lock file is removed on exit.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE_NAME
    while True:
        handle = open(path, "a+b")  # noqa: SIM115 - held open for the whole run
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise FetchError(
                f"{out_dir}: another petctiqa fetch is writing to this folder "
                f"(lock {path}); wait for it to finish or use another --out"
            ) from None
        try:  # the previous holder may have removed the file after we opened it: retry then
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        handle.close()


def execute_fetch(
    client: TciaClient,
    plan: FetchPlan,
    *,
    workers: int = 4,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> FetchReport:
    """Download what ``plan`` lists (see the module doc for the checks) and write metadata.csv.

    ``workers`` bounds parallel downloads. Raises FetchError after writing metadata.csv for the
    complete pairs when any series could not be downloaded; running again resumes. The output
    folder is locked for the run (:func:`output_lock`).
    """
    with output_lock(Path(plan.out_dir)):
        return _execute_fetch_locked(client, plan, workers, progress, log)


def _execute_fetch_locked(
    client: TciaClient,
    plan: FetchPlan,
    workers: int,
    progress: bool,
    log: Callable[[str], None] | None,
) -> FetchReport:
    say = log or (lambda message: None)
    out_dir = Path(plan.out_dir)
    staging = out_dir / PARTIAL_DIR_NAME
    _clean_staging(staging)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = SeriesRecords(out_dir)

    states = [_StudyState(study) for patient in plan.patients for study in patient.studies]
    spare = list(plan.spare_patient_ids)
    local: dict[str, LocalSeries] = {}
    errors: dict[str, str] = {}
    rejected: list[tuple[str, str]] = []
    unpaired: list[str] = []
    downloaded_bytes = 0
    bar_lock = threading.Lock()
    bar = tqdm(
        total=plan.total_download_bytes,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="fetch",
        disable=not progress,
        file=sys.stderr,
    )

    def obtain(series: RemoteSeries) -> LocalSeries:
        existing, problem = scan_complete_series(out_dir, series, records)
        if existing is not None:
            return existing
        if problem is not None:
            say(
                f"{series.patient_id}: series {series.series_uid} on disk is damaged "
                f"({problem}); downloading it again"
            )
        expected = plan.download_bytes.get(series.series_uid)
        if expected is None:
            expected = _series_bytes(client, series)
            with bar_lock:
                bar.total = (bar.total or 0) + expected
                bar.refresh()
        received = 0

        def on_bytes(n: int) -> None:
            # the bar shows the server's series size: zip overhead or compression must not
            # push it past 100 %, so the credit per series is clamped to [0, expected]
            nonlocal downloaded_bytes, received
            credit = min(max(received + n, 0), expected) - min(max(received, 0), expected)
            received += n
            with bar_lock:
                downloaded_bytes += n
                bar.update(credit)

        local_series = download_series(client, series, out_dir, on_bytes, records=records, log=say)
        with bar_lock:
            bar.update(expected - min(max(received, 0), expected))
        return local_series

    def discard(series: RemoteSeries) -> None:
        item = local.pop(series.series_uid, None)
        if item is not None and item.downloaded:
            records.drop(series.series_uid)
            shutil.rmtree(item.directory, ignore_errors=True)
            _remove_empty_parents(item.directory.parent, out_dir)

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            while any(st.status == "pending" for st in states):
                wanted = {
                    s.series_uid: s
                    for st in states
                    if st.status == "pending"
                    for s in (st.plan.pet, st.ct)
                    if s.series_uid not in local and s.series_uid not in errors
                }
                futures = {uid: pool.submit(obtain, s) for uid, s in wanted.items()}
                for uid, future in futures.items():
                    try:
                        local[uid] = future.result()
                    except FetchError as exc:
                        errors[uid] = str(exc)
                for st in states:
                    if st.status != "pending":
                        continue
                    pet_uid, ct_uid = st.plan.pet.series_uid, st.ct.series_uid
                    if pet_uid in errors or ct_uid in errors:
                        st.status = "failed"
                        continue
                    problem = pairing_problem(local[pet_uid], local[ct_uid])
                    if problem is None:
                        st.status = "paired"
                        continue
                    say(
                        f"{st.plan.patient_id}: CT '{st.ct.series_description}' is not the PET's "
                        f"CT ({problem}); trying the next candidate"
                    )
                    rejected.append((ct_uid, problem))
                    discard(st.ct)
                    st.ct_index += 1
                    if st.ct_index == len(st.plan.ct_candidates):
                        st.status = "unpaired"
                        discard(st.plan.pet)
                if plan.target_patients is not None:
                    by_patient: dict[str, set[str]] = {}
                    for st in states:
                        by_patient.setdefault(st.plan.patient_id, set()).add(st.status)
                    dropped = [p for p, s in by_patient.items() if s == {"unpaired"}]
                    for pid in dropped:
                        if pid not in unpaired:
                            unpaired.append(pid)
                            say(f"{pid}: no CT matches the PET's frame of reference; dropped")
                    missing = plan.target_patients - (len(by_patient) - len(dropped))
                    if missing > 0 and spare:
                        more, _, spare = _plan_patients(
                            client,
                            plan.collection,
                            spare,
                            missing,
                            pool,
                            max(1, workers) * 2,
                            out_dir,
                        )
                        for patient in more:
                            say(f"{patient.patient_id}: added in place of a dropped patient")
                            states.extend(_StudyState(study) for study in patient.studies)
                else:
                    for st in states:
                        if st.status == "unpaired" and st.plan.patient_id not in unpaired:
                            unpaired.append(st.plan.patient_id)
    finally:
        bar.close()
        _finish_staging(staging, keep={staging_name(uid) for uid in errors})

    pairs = tuple(
        sorted(
            (
                FetchedPair(
                    st.plan.patient_id,
                    st.plan.study_uid,
                    local[st.plan.pet.series_uid],
                    local[st.ct.series_uid],
                )
                for st in states
                if st.status == "paired"
            ),
            key=lambda p: (p.patient_id, p.study_uid),
        )
    )
    rows = [metadata_row(s, out_dir) for pair in pairs for s in (pair.pet, pair.ct)]
    metadata_csv = write_metadata_csv(out_dir, rows)
    used = [s for pair in pairs for s in (pair.pet, pair.ct)]
    report = FetchReport(
        out_dir=out_dir,
        metadata_csv=metadata_csv,
        pairs=pairs,
        downloaded_series=sum(1 for s in local.values() if s.downloaded),
        reused_series=sum(1 for s in used if not s.downloaded),
        downloaded_bytes=downloaded_bytes,
        rejected_ct=tuple(rejected),
        unpaired_patients=tuple(unpaired),
    )
    if errors:
        first_uid, first_error = next(iter(errors.items()))
        raise FetchError(
            f"{len(errors)} series could not be downloaded (first: {first_error}); "
            f"{len(pairs)} complete PET/CT pair(s) are in {out_dir} and metadata.csv; "
            "run the same command again to resume"
        )
    return report


def _clean_staging(staging: Path) -> None:
    """Remove what an interrupted run left in the staging folder except the partial zips
    (and their validators), which a resumed download continues."""
    if not staging.is_dir():
        return
    for entry in staging.iterdir():
        if entry.is_file() and entry.name.endswith((".zip.part", ".zip.part.validator")):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _finish_staging(staging: Path, keep: set[str]) -> None:
    """At the end of a run keep only the partial zips of series that failed (the next run
    resumes them); remove the staging folder when nothing is left."""
    if not staging.is_dir():
        return
    for entry in staging.iterdir():
        if entry.name.split(".zip.part")[0] in keep and entry.is_file():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        staging.rmdir()


def _remove_empty_parents(directory: Path, stop: Path) -> None:
    """Remove ``directory`` and its parents up to (not including) ``stop`` while empty."""
    with contextlib.suppress(OSError):
        while directory != stop and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
            directory = directory.parent
