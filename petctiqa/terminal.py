"""Text from outside (a TCIA server, DICOM headers) made safe to print on a terminal.

A collection name, patient ID or series description is whatever the server or the file says;
printed as it is, an escape sequence in it could move the cursor, rewrite earlier lines or
retitle the window. :func:`printable` writes every control character as its escape instead.
"""

from __future__ import annotations

import unicodedata

BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
"""Direction overrides and isolates: they reorder how the rest of a line reads."""


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` with each control character (C0 and C1 controls, DEL, line and paragraph
    separators, bidirectional controls) written as its Python escape, e.g. ESC as ``\\x1b``;
    spaces and every other character stay as they are. ``keep_newlines`` keeps ``\\n`` (for
    multi-line text this program laid out)."""
    return "".join(
        repr(ch)[1:-1] if _is_control(ch) and not (keep_newlines and ch == "\n") else ch
        for ch in text
    )


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in BIDI_CONTROLS
