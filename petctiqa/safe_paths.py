"""Safe file names from outside text, and a check that a path stays inside its output folder.

Text from DICOM headers, manifests, spreadsheets or a web archive (a PatientID such as
``../../tmp/x``, a series description with ``/``) must never choose where a file is written.
:func:`safe_component` turns any text into one plain file-name component, and :func:`inside`
refuses a path that would leave its root folder (after resolving ``..`` and symlinks).

Names are deterministic and collision-free: text that is already a safe name is returned
unchanged (so the phantom's ``P001`` stays ``P001`` and existing output keeps its bytes); any
other text is cleaned and gets a short hash of the *original* text appended, so two different
texts never map to the same name (short of a 48-bit hash collision).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from petctiqa.errors import PetctiqaError

MAX_COMPONENT_CHARS = 96
"""Longest name returned (well under the 255 bytes of common file systems, leaving room for
suffixes such as ``_s3_g2.png`` and the atomic writer's temporary-name decoration)."""

_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
"""A name kept as it is: ASCII letters, digits, ``.``, ``_``, ``-``, not starting with a dot."""
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_HASH_SUFFIX = re.compile(r"-h[0-9a-f]{12}")
"""The suffix :func:`safe_component` appends; a name that already ends like this is treated as
unsafe too, so an original text can never equal the cleaned form of another."""
_HASH_CHARS = 12


class UnsafePathError(PetctiqaError):
    """A path built from outside text would leave the folder it must stay in."""


def safe_component(text: str) -> str:
    """``text`` as one safe file-name component (see the module docstring): ``"P001"`` stays
    ``"P001"``; ``"../../tmp/x"`` becomes ``"_tmp_x-h"`` followed by 12 hex digits."""
    text = str(text)
    if len(text) <= MAX_COMPONENT_CHARS and _SAFE.fullmatch(text) and not _HASH_SUFFIX.search(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    cleaned = _UNSAFE_RUN.sub("_", text).lstrip(".")
    cleaned = cleaned[: MAX_COMPONENT_CHARS - len(digest) - 2] or "_"
    return f"{cleaned}-h{digest}"


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """``path`` (made absolute against ``root`` if relative), after checking that it resolves
    to ``root`` itself or somewhere below it; raises :class:`UnsafePathError` otherwise.

    Symlinks are resolved, so a link inside ``root`` that points outside is refused too.
    The path itself need not exist yet.
    """
    root_path = Path(root)
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root_path / candidate
    resolved_root = root_path.resolve()
    resolved = candidate.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise UnsafePathError(f"{candidate}: resolves to {resolved}, outside {resolved_root}")
    return candidate


def join_component(folder: str | os.PathLike[str], name: str) -> Path:
    """``folder / name`` after checking (cheaply, without touching the disk) that ``name`` is one
    plain component: not empty, ``.`` or ``..``, without a path separator or NUL.

    With ``folder`` itself checked by :func:`inside` once, this keeps each file in it: the
    atomic writer replaces a symlink found at ``name`` instead of writing through it."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise UnsafePathError(f"{folder}: {name!r} is not a plain file name")
    return Path(folder) / name


def relative_inside(text: str, where: str) -> str:
    """``text`` after checking that it is a relative ``/``-separated path that stays inside the
    folder it is relative to (no absolute path, drive, ``..`` part, backslash or NUL), without
    touching the disk; ``where`` names the text's origin in the error (file, line, column)."""
    parts = text.split("/")
    if (
        not text
        or text.startswith("/")
        or "\\" in text
        or "\x00" in text
        or ":" in parts[0]
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise UnsafePathError(
            f"{where}: {text!r} is not a relative path that stays inside its folder"
        )
    return text
