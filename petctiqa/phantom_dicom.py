"""DICOM encoding for the phantom writer (:mod:`petctiqa.phantom`): value formats, file meta
and element bytes, explicit VR little endian. The writer assembles slices from these pieces; the
bytes are what pydicom writes, so the phantom's files stay byte-identical.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian

from petctiqa import __version__

_IMPLEMENTATION_UID = "2.25." + str(
    int.from_bytes(hashlib.sha256(b"petctiqa phantom writer").digest()[:16], "big")
)


def ds_text(value: float) -> str:
    """A decimal string (DS, at most 16 characters) for ``value``."""
    for digits in (10, 9, 8, 7, 6):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot write {value!r} as a DICOM decimal string")


def tm(moment: dt.datetime) -> str:
    return moment.strftime("%H%M%S.00")


def da(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


def file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PETCTIQA_{__version__}"[:16]
    return meta


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def element_bytes(ds: Dataset) -> dict[int, bytes]:
    """Each element of ``ds`` encoded alone (explicit VR little endian), keyed by tag."""
    encoded: dict[int, bytes] = {}
    for element in ds:
        buffer = DicomBytesIO()
        buffer.is_little_endian = True
        buffer.is_implicit_VR = False
        write_data_element(buffer, element)
        encoded[int(element.tag)] = buffer.getvalue()
    return encoded


def pixel_data_bytes(pixels: bytes) -> bytes:
    """The (7FE0,0010) Pixel Data element, VR OW, explicit VR little endian."""
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, len(pixels)) + pixels


def file_meta_bytes(sop_class: str, sop_instance: str) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_file_meta_info(buffer, file_meta(sop_class, sop_instance), enforce_standard=True)
    return b"\0" * 128 + b"DICM" + buffer.getvalue()
