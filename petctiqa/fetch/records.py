"""What ``petctiqa fetch`` recorded about each series it completed, and the check against it.

When a series is installed (or an older download is verified for the first time), fetch records
the size and SHA-256 of each of its files in ``<out>/.petctiqa-fetch-verified.json``. Every later
run compares the files on disk with that record before re-using the series: names and sizes
first (a ``stat`` per file), then the hashes (every byte read once). A series that fails is
downloaded again. Without a record (a tree from an older petctiqa or from the NBIA Data
Retriever) the caller checks the DICOM files themselves and then records them.

The file is written atomically after each change, so a killed run leaves either the old or the
new record; a record that cannot be read is treated as absent (the series are checked in full).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from petctiqa.atomic import atomic_write_text

RECORDS_FILE_NAME = ".petctiqa-fetch-verified.json"
"""Also named in ``dicom/index.py`` (FETCH_RECORD_NAME), which does not report it as a stray file."""
_FORMAT_VERSION = 1
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str


@dataclass(frozen=True)
class SeriesRecord:
    """The files of one complete series: folder relative to the output folder, and
    ``{file name: digest}``."""

    directory: str
    files: Mapping[str, FileDigest]


def digest_bytes(data: bytes) -> FileDigest:
    return FileDigest(len(data), hashlib.sha256(data).hexdigest())


def digest_file(path: Path) -> FileDigest:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            sha.update(chunk)
            size += len(chunk)
    return FileDigest(size, sha.hexdigest())


def record_problem(directory: Path, record: SeriesRecord, hashes: bool = True) -> str | None:
    """Why the ``*.dcm`` files in ``directory`` differ from ``record`` (None when they match).

    Sizes are compared for every file before any hash is computed, so a truncated file is found
    without reading the series."""
    on_disk = {p.name: p for p in directory.glob("*.dcm")} if directory.is_dir() else {}
    missing = sorted(set(record.files) - set(on_disk))
    if missing:
        return f"{missing[0]} is missing ({len(missing)} of {len(record.files)} files)"
    extra = sorted(set(on_disk) - set(record.files))
    if extra:
        return f"{extra[0]} was not part of the downloaded series"
    for name, want in sorted(record.files.items()):
        size = on_disk[name].stat().st_size
        if size != want.size:
            return f"{name} has {size} bytes, {want.size} when downloaded"
    if hashes:
        for name, want in sorted(record.files.items()):
            if digest_file(on_disk[name]).sha256 != want.sha256:
                return f"{name} has changed since it was downloaded (SHA-256 differs)"
    return None


class SeriesRecords:
    """The records of one output folder, keyed by SeriesInstanceUID (thread-safe)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / RECORDS_FILE_NAME
        self._lock = threading.Lock()
        self._records: dict[str, SeriesRecord] = _load(self.path)

    def get(self, series_uid: str) -> SeriesRecord | None:
        with self._lock:
            return self._records.get(series_uid)

    def put(self, series_uid: str, record: SeriesRecord) -> None:
        with self._lock:
            self._records[series_uid] = record
            self._save()

    def drop(self, series_uid: str) -> None:
        with self._lock:
            if self._records.pop(series_uid, None) is not None:
                self._save()

    def _save(self) -> None:
        payload = {
            "version": _FORMAT_VERSION,
            "series": {
                uid: {
                    "directory": record.directory,
                    "files": {n: [d.size, d.sha256] for n, d in sorted(record.files.items())},
                }
                for uid, record in sorted(self._records.items())
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(payload, indent=1) + "\n")


def _load(path: Path) -> dict[str, SeriesRecord]:
    """The records in ``path``; empty when it is missing or unreadable (then every series is
    checked in full, which is safe, only slower)."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("version") != _FORMAT_VERSION:
            return {}
        return {
            str(uid): SeriesRecord(
                directory=str(entry["directory"]),
                files={
                    str(name): FileDigest(int(size), str(sha))
                    for name, (size, sha) in entry["files"].items()
                },
            )
            for uid, entry in payload["series"].items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}
