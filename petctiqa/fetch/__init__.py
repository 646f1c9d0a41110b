"""Plan and run a resumable, verified download of PET/CT studies from TCIA.

Flow: :func:`plan_fetch` queries series listings and picks, per study, one PET (PT) series and a
ranked list of CT candidates; :func:`execute_fetch` downloads the series zips in parallel,
verifies them, unpacks them into the NBIA Data Retriever layout, checks each PET/CT pair on the
headers and writes ``metadata.csv``. docs/fetch.md describes the behaviour and guarantees.

Rooms (one job each):

- :mod:`~petctiqa.fetch.choose`: which PET and which CT candidates of a study (listings only)
- :mod:`~petctiqa.fetch.layout`: folder and staging names (the retriever layout, made safe)
- :mod:`~petctiqa.fetch.plan`: query the archive, choose patients, size the download
- :mod:`~petctiqa.fetch.local`: check a series folder with :mod:`petctiqa.dicom`, install a zip
- :mod:`~petctiqa.fetch.records`: sizes and SHA-256 of completed series, re-checked every run
- :mod:`~petctiqa.fetch.download`: one series download with resume and retries
- :mod:`~petctiqa.fetch.metadata`: ``metadata.csv``
- :mod:`~petctiqa.fetch.run`: the run (rounds of downloads, pair checks, replacements), the lock

The HTTP side is :mod:`petctiqa.tcia_client`.
"""

from __future__ import annotations

from pathlib import Path

from petctiqa import patient_list
from petctiqa.errors import FetchError
from petctiqa.fetch.choose import (
    MIN_VOLUME_INSTANCES,
    PatientStudies,
    StudyPlan,
    patient_studies,
    pick_pet_series,
    rank_ct_candidates,
)
from petctiqa.fetch.download import download_series
from petctiqa.fetch.layout import (
    PARTIAL_DIR_NAME,
    format_study_date,
    sanitize_name,
    series_directory,
    series_folder_name,
    study_folder_name,
)
from petctiqa.fetch.local import (
    LocalSeries,
    SeriesCheckFailed,
    install_series_zip,
    pairing_problem,
    scan_complete_series,
)
from petctiqa.fetch.metadata import METADATA_COLUMNS, format_file_size, write_metadata_csv
from petctiqa.fetch.plan import FetchPlan, describe_plan, plan_fetch
from petctiqa.fetch.records import RECORDS_FILE_NAME
from petctiqa.fetch.run import (
    LOCK_FILE_NAME,
    FetchedPair,
    FetchReport,
    FolderLocked,
    SeriesDownloadsFailed,
    execute_fetch,
    output_lock,
)


def read_patient_list(path: Path) -> list[str]:
    """Patient IDs from a patient-list file (:mod:`petctiqa.patient_list`), errors as
    FetchError."""
    try:
        return patient_list.read_patient_list(path)
    except patient_list.PatientListError as exc:
        raise FetchError(str(exc)) from None


__all__ = [
    "LOCK_FILE_NAME",
    "METADATA_COLUMNS",
    "MIN_VOLUME_INSTANCES",
    "PARTIAL_DIR_NAME",
    "RECORDS_FILE_NAME",
    "FetchPlan",
    "FetchReport",
    "FetchedPair",
    "FolderLocked",
    "LocalSeries",
    "PatientStudies",
    "SeriesCheckFailed",
    "SeriesDownloadsFailed",
    "StudyPlan",
    "describe_plan",
    "download_series",
    "execute_fetch",
    "format_file_size",
    "format_study_date",
    "install_series_zip",
    "output_lock",
    "pairing_problem",
    "patient_studies",
    "pick_pet_series",
    "plan_fetch",
    "rank_ct_candidates",
    "read_patient_list",
    "sanitize_name",
    "scan_complete_series",
    "series_directory",
    "series_folder_name",
    "study_folder_name",
    "write_metadata_csv",
]
