"""Exception types. Every error a user can cause is a PetctiqaError whose message names the
file, field or value at fault; the CLI prints it as one line and exits non-zero."""

from __future__ import annotations


class PetctiqaError(Exception):
    """Base class for errors caused by input (files, options, protocols), not by bugs."""


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
