"""Where fetched files go: the NBIA Data Retriever layout, made safe (pure functions).

``<out>/<Collection>/<SubjectID>/<MM-DD-YYYY>-NA-<StudyDescription>-<last 5 of StudyUID>/
<SeriesNumber %.6f>-<SeriesDescription>-<last 5 of SeriesUID>/``. Names come from the archive's
listing, so they are treated as hostile: :func:`sanitize_name` gives the retriever's form (spaces
kept) but always a single plain name component, UID parts go through
:func:`petctiqa.safe_paths.safe_component`, and :func:`series_directory` checks the result with
:func:`petctiqa.safe_paths.inside`.
"""

from __future__ import annotations

import re
from pathlib import Path

from petctiqa.safe_paths import inside, safe_component
from petctiqa.tcia_client import RemoteSeries

PARTIAL_DIR_NAME = ".petctiqa-partial"
"""Folder inside the output folder that holds downloads in progress (removed when done)."""

_UNSAFE_NAME_CHARS = re.compile(r'[<>:"/\\|?*^()\x00-\x1f]')


def sanitize_name(text: str, limit: int = 64) -> str:
    """A folder-name form of archive text, as the NBIA Data Retriever writes it: drops
    ``<>:"/\\|?*^()`` and control characters (spaces, double spaces included, are kept), leading
    dots and spaces, and cuts to ``limit`` characters and ``1.5 * limit`` UTF-8 bytes; "NA" if
    empty. The result is always one plain name component (never ``.``/``..``, hidden, or longer
    than a file system allows)."""
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


def partial_zip_path(out_dir: Path, series_uid: str) -> Path:
    """Where the zip of a series is downloaded to (kept between runs for resuming)."""
    return Path(out_dir) / PARTIAL_DIR_NAME / f"{staging_name(series_uid)}.zip.part"
