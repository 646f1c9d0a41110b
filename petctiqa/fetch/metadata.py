"""``metadata.csv``: the NBIA Data Retriever's table of the series in a download (17 columns)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping
from pathlib import Path

import pydicom.uid

from petctiqa.atomic import atomic_write_text
from petctiqa.fetch.layout import format_study_date
from petctiqa.fetch.local import LocalSeries

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
