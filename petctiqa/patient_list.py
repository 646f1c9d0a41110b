"""The patient-list file read by ``petctiqa fetch`` and ``petctiqa build-dataset``.

One patient ID per line, in the order wanted; blank lines and ``#`` comments are ignored, and
only the first comma-separated field counts (so the first column of a CSV such as
``metadata.csv`` also works). A patient listed twice is an error: a list is written by hand,
and a repeated line usually hides a typo of another ID.
"""

from __future__ import annotations

from pathlib import Path

from petctiqa.errors import PetctiqaError


class PatientListError(PetctiqaError):
    """A patient-list file cannot be read, is empty or repeats a patient."""


def read_patient_list(path: Path) -> list[str]:
    """The patient IDs of the file at ``path``, in file order (see the module doc)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise PatientListError(f"{path}: cannot read patient list ({reason})") from None
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        value = line.split("#", 1)[0].split(",", 1)[0].strip()
        if not value:
            continue
        if value in first_line:
            raise PatientListError(
                f"{path}: patient {value!r} listed twice (lines {first_line[value]} and {number})"
            )
        first_line[value] = number
    if not first_line:
        raise PatientListError(f"{path}: patient list names no patient")
    return list(first_line)
