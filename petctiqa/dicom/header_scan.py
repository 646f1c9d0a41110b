"""Fast reader for a few plain data elements of a DICOM Part 10 file (the common case only).

pydicom turns every element of a header into Python objects and its value conversion costs as much
again when the values are used (figures: ``docs/dicom.md``, "Reading speed"). Indexing thousands of
files and loading volumes need about 30 plain tags, so :func:`scan_header` walks the file's elements
itself, keeps the bytes of the wanted ones and decodes them the way pydicom does (same strings,
numbers and multi-value splitting). It also notes where the PixelData value starts, so native pixels
can be read straight from the file.

Handled: files with the 128-byte preamble and ``DICM``; Explicit and Implicit VR Little Endian
data sets, also with encapsulated (compressed) pixel data; sequences of defined or undefined
length anywhere (skipped, never decoded). Everything else returns ``None`` and the caller reads
the file with pydicom instead: no preamble, big endian or deflated data sets, a wanted element
of a VR this module does not decode (sequences included), non-ASCII text in a wanted element, a
value pydicom would have to repair or warn about, and any malformed or cut element. Results
therefore never depend on which reader ran; the tests check that both give the same values on
every real and phantom file.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_OTHER_UNSUPPORTED_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    }
)
PIXEL_DATA_TAG = 0x7FE00010
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
"""Explicit VRs with 2 reserved bytes and a 4-byte length."""
_FIRST_READ_BYTES = 1 << 16
"""Bytes read first; the rest of the file is read only when the header is longer."""

_TAG_LENGTH = struct.Struct("<HHI")
_TAG_VR_SHORT_LENGTH = struct.Struct("<HH2sH")
_UINT32 = struct.Struct("<I")
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_STRING_VRS = frozenset(("AE", "AS", "CS", "DA", "DT", "TM"))
"""Decoded like pydicom's ``convert_string``: trailing padding off the whole value, then split."""
_TEXT_VRS = frozenset(("LO", "SH"))
"""Decoded like pydicom's ``convert_text``: split, then trailing padding off every value."""
DECODED_VRS = _STRING_VRS | _TEXT_VRS | {"UI", "DS", "IS"} | set(_NUMBER_FORMATS)


class _Unsupported(Exception):
    """The file needs pydicom (internal: :func:`scan_header` returns None)."""


@dataclass(frozen=True)
class ScanFileMeta:
    """The two file meta elements the callers use (named as on a pydicom ``FileMetaDataset``)."""

    TransferSyntaxUID: UID
    MediaStorageSOPClassUID: str


class ScannedHeader:
    """The wanted elements of one file, decoded as pydicom would, with a ``Dataset``-like face:
    ``header.get("Rows")``, ``"Rows" in header``, ``header.Rows``, ``header.file_meta``.

    Only the keywords it was asked for can be looked up (others raise KeyError, or
    AttributeError for ``header.X``, with a message saying so: a programming error, not an
    absent element). An element that is present but empty holds ``""`` (text)
    or ``None`` (numbers), like pydicom.
    """

    __slots__ = ("path", "file_meta", "pixel_offset", "pixel_length", "_values", "_wanted")

    def __init__(
        self,
        path: Path,
        file_meta: ScanFileMeta,
        values: dict[str, Any],
        wanted: frozenset[str],
        pixel_offset: int | None,
        pixel_length: int | None,
    ) -> None:
        self.path = path
        self.file_meta = file_meta
        self._values = values
        self._wanted = wanted
        self.pixel_offset = pixel_offset
        """File offset of the PixelData value (native pixels), else None (absent or
        encapsulated)."""
        self.pixel_length = pixel_length

    def _check(self, keyword: str, error: type[Exception] = KeyError) -> None:
        if keyword not in self._wanted:
            raise error(f"{keyword} was not read by scan_header (ask for it)")

    def get(self, keyword: str, default: Any = None) -> Any:
        self._check(keyword)
        return self._values.get(keyword, default)

    def __contains__(self, keyword: str) -> bool:
        self._check(keyword)
        return keyword in self._values

    def __getattr__(self, keyword: str) -> Any:
        # only reached for names that are not slots
        if keyword.startswith("_"):
            raise AttributeError(keyword)
        self._check(keyword, AttributeError)
        try:
            return self._values[keyword]
        except KeyError:
            raise AttributeError(f"header has no element {keyword}") from None


@dataclass(frozen=True)
class _Wanted:
    keywords: frozenset[str]
    by_tag: dict[int, tuple[str, str]]
    """tag -> (keyword, VR)."""


@functools.cache
def _wanted(keywords: frozenset[str]) -> _Wanted:
    by_tag = {}
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"unknown DICOM keyword {keyword!r}")
        by_tag[int(tag)] = (keyword, dictionary_VR(tag))
    return _Wanted(keywords, by_tag)


def scan_header(path: Path, keywords: frozenset[str]) -> ScannedHeader | None:
    """The elements named by ``keywords`` (pydicom keywords) of the file at ``path``, or None
    when the file needs pydicom (see the module docstring). The walk goes on to the PixelData
    element (like pydicom's ``stop_before_pixels``) and records where its value starts.

    Raises OSError when the file cannot be read.
    """
    wanted = _wanted(keywords)
    with open(path, "rb") as handle:
        data = handle.read(_FIRST_READ_BYTES)
        complete = len(data) < _FIRST_READ_BYTES
        for _attempt in range(2):
            try:
                return _scan(path, data, complete, wanted)
            except _NeedMore:
                if complete:
                    return None
                data += handle.read()
                complete = True
            except _Unsupported:
                return None
    return None  # pragma: no cover - the second attempt has the whole file


class _NeedMore(Exception):
    """The element walk ran past the bytes read so far."""


def _scan(path: Path, data: bytes, complete: bool, wanted: _Wanted) -> ScannedHeader:
    size = len(data)

    def need(end: int) -> None:
        if end > size:
            raise _NeedMore if not complete else _Unsupported

    need(132)
    if data[128:132] != b"DICM":
        raise _Unsupported
    # file meta information: group 0002, always explicit VR little endian
    pos = 132
    meta: dict[int, bytes] = {}
    while True:
        need(pos + 8)
        if data[pos : pos + 2] != b"\x02\x00":  # group 0002 ends the meta information
            break
        tag, _vr, length, pos = _element_header(data, pos, True, need)
        if length == _UNDEFINED:
            raise _Unsupported
        need(pos + length)
        meta[tag & 0xFFFF] = data[pos : pos + length]
        pos += length
    if 0x0010 not in meta:
        raise _Unsupported
    syntax = _ascii(meta[0x0010]).rstrip("\0 ")
    if syntax in _OTHER_UNSUPPORTED_SYNTAXES:
        raise _Unsupported
    explicit = syntax != IMPLICIT_VR_LITTLE_ENDIAN
    if (
        explicit
        and syntax != EXPLICIT_VR_LITTLE_ENDIAN
        and not syntax.startswith(("1.2.840.10008.1.2.4.", "1.2.840.10008.1.2.5"))
    ):
        raise _Unsupported  # a private or unknown syntax: let pydicom decide
    file_meta = ScanFileMeta(
        TransferSyntaxUID=UID(syntax),
        MediaStorageSOPClassUID=_ascii(meta.get(0x0002, b"")).rstrip("\0 "),
    )

    values: dict[str, Any] = {}
    offset: int | None = None
    pixel_length: int | None = None
    while pos < size or not complete:
        tag, vr, length, pos = _element_header(data, pos, explicit, need)
        if tag == PIXEL_DATA_TAG:
            if length != _UNDEFINED:
                offset, pixel_length = pos, length
            break
        if tag in wanted.by_tag and length == _UNDEFINED:
            raise _Unsupported  # a wanted sequence
        if length == _UNDEFINED:
            pos = _skip_sequence(data, pos, explicit, need)
            continue
        need(pos + length)
        entry = wanted.by_tag.get(tag)
        if entry is not None:
            keyword, dictionary_vr = entry
            file_vr = dictionary_vr if vr is None else vr.decode("ascii")
            if file_vr != dictionary_vr and not (
                vr is not None and file_vr in DECODED_VRS and dictionary_vr in DECODED_VRS
            ):
                raise _Unsupported
            values[keyword] = _decode(file_vr, data[pos : pos + length])
        pos += length
    return ScannedHeader(path, file_meta, values, wanted.keywords, offset, pixel_length)


def _element_header(
    data: bytes, pos: int, explicit: bool, need: Callable[[int], None]
) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None for implicit VR, value length, position of the value) of the element
    at ``pos``. In explicit VR an undefined length is allowed only for SQ and the pixel data;
    in implicit VR the caller tells (any element but the pixel data is then a sequence)."""
    need(pos + 8)
    if not explicit:
        group, element, length = _TAG_LENGTH.unpack_from(data, pos)
        return group << 16 | element, None, length, pos + 8
    group, element, vr, length = _TAG_VR_SHORT_LENGTH.unpack_from(data, pos)
    tag = group << 16 | element
    if vr in _LONG_VRS:
        need(pos + 12)
        (length,) = _UINT32.unpack_from(data, pos + 8)
        if length == _UNDEFINED and vr != b"SQ" and tag != PIXEL_DATA_TAG:
            raise _Unsupported  # e.g. UN of undefined length (an implicit VR sequence)
        return tag, vr, length, pos + 12
    if not (vr.isalpha() and vr.isupper()):
        raise _Unsupported  # not a VR: malformed, or an implicit VR meta group
    return tag, vr, length, pos + 8


def _skip_sequence(data: bytes, pos: int, explicit: bool, need: Callable[[int], None]) -> int:
    """Position after an undefined-length sequence whose first item starts at ``pos``."""
    while True:
        need(pos + 8)
        group, element, length = _TAG_LENGTH.unpack_from(data, pos)  # items have no VR
        tag = group << 16 | element
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise _Unsupported
        if length != _UNDEFINED:
            need(pos + length)
            pos += length
            continue
        # an item of undefined length: its elements up to the item delimiter
        while True:
            need(pos + 8)
            group, element, _length = _TAG_LENGTH.unpack_from(data, pos)
            if (group << 16 | element) == _ITEM_END:
                pos += 8
                break
            tag, vr, length, pos = _element_header(data, pos, explicit, need)
            if length == _UNDEFINED and vr is not None and vr != b"SQ":
                raise _Unsupported  # encapsulated pixels inside a sequence (an icon image)
            if length == _UNDEFINED:
                pos = _skip_sequence(data, pos, explicit, need)
            else:
                need(pos + length)
                pos += length


def _ascii(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise _Unsupported from None


def _decode(vr: str, raw: bytes) -> Any:
    """One element value as pydicom gives it (str, float, int, or a list of them)."""
    if vr in _NUMBER_FORMATS:
        code = _NUMBER_FORMATS[vr]
        width = struct.calcsize(code)
        if not raw:
            return None
        if len(raw) % width:
            raise _Unsupported
        numbers = struct.unpack(f"<{len(raw) // width}{code}", raw)
        return numbers[0] if len(numbers) == 1 else list(numbers)
    text = _ascii(raw)
    if vr == "UI":
        items = text.rstrip("\0 ").rstrip(" \x00").split("\\")
    elif vr in _TEXT_VRS:
        items = [item.rstrip("\0 ") for item in text.split("\\")]
    elif vr in ("DS", "IS"):
        if not raw:
            return None
        items = text.strip().rstrip(" \x00").split("\\")
        try:
            numbers = [float(item) if vr == "DS" else int(item) for item in items]
        except ValueError:
            raise _Unsupported from None  # empty or odd numbers: pydicom warns or repairs
        return numbers[0] if len(numbers) == 1 else numbers
    elif vr in _STRING_VRS:
        items = text.rstrip(" \x00").split("\\")
    else:  # pragma: no cover - _scan only decodes DECODED_VRS
        raise _Unsupported
    return items[0] if len(items) == 1 else items


HeaderLike = Dataset | ScannedHeader
"""What header readers return: a pydicom data set or a :class:`ScannedHeader` (same face)."""
