"""Exception types. Every error a user can cause is a PetctiqaError whose message names the
file, field or value at fault; the CLI prints it as one line and exits non-zero.

Messages state facts in library terms. When a library setting (a keyword of a library call or an
options dataclass field, such as ``device`` or ``allow_simulated``) is at fault or is the way
out, the error or warning carries its name in ``setting``; the CLI words that as its flag."""

from __future__ import annotations


class _CarriesSetting:
    """``setting``: the library setting at fault, or None (pickling keeps it: it is in
    __dict__)."""

    def __init__(self, *args: object, setting: str | None = None) -> None:
        super().__init__(*args)
        self.setting = setting


class PetctiqaError(_CarriesSetting, Exception):
    """Base class for errors caused by input (files, options, protocols), not by bugs."""


class PetctiqaWarning(_CarriesSetting, UserWarning):
    """Base class for warnings about input, with ``setting`` as errors have it. Warn with an
    instance (``warnings.warn(DataWarning(text, setting="x"))``) to carry it."""


class ProtocolError(PetctiqaError):
    """A protocol TOML file is missing, unreadable or has a bad field."""


class DicomError(PetctiqaError):
    """A DICOM file or series is unreadable, inconsistent or lacks a required tag."""


class DatasetError(PetctiqaError):
    """A dataset folder is missing, incomplete or inconsistent."""


class RatingError(PetctiqaError):
    """A rating, rating sheet or rating database is invalid."""


class ModelError(PetctiqaError):
    """A checkpoint, weight file or model configuration is invalid or missing."""


class FetchError(PetctiqaError):
    """A download from an archive failed."""
