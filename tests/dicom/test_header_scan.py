"""The fast header reader must give pydicom's values, or step aside (None) for pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from petctiqa.dicom import index, volume
from petctiqa.dicom.header_scan import scan_header
from petctiqa.dicom.index import INDEX_KEYWORDS, index_dicom_tree, index_file
from petctiqa.dicom.volume import LOAD_KEYWORDS

KEYWORDS = INDEX_KEYWORDS | LOAD_KEYWORDS


def _plain(value):
    """pydicom's value as plain Python (DSfloat -> float, IS -> int, UID -> str, lists)."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    return [_plain(v) for v in value]


def _assert_same_as_pydicom(path: Path) -> None:
    scanned = scan_header(path, KEYWORDS)
    assert scanned is not None, path
    reference = pydicom.dcmread(path)
    for keyword in sorted(KEYWORDS - {"ModalityLUTSequence"}):
        assert (keyword in scanned) == (keyword in reference), (path, keyword)
        assert scanned.get(keyword) == _plain(reference.get(keyword)), (path, keyword)
    assert scanned.file_meta.TransferSyntaxUID == reference.file_meta.TransferSyntaxUID
    assert scanned.file_meta.MediaStorageSOPClassUID == reference.file_meta.MediaStorageSOPClassUID
    raw = path.read_bytes()
    assert scanned.pixel_offset is not None
    assert raw[scanned.pixel_offset : scanned.pixel_offset + scanned.pixel_length] == (
        reference.PixelData
    )


def test_every_real_file_reads_as_pydicom_reads_it(shared_data):
    # GE PET (implicit VR, undefined-length sequences, private tags), cropped CT and PET,
    # explicit-VR CT: 522 files in all
    files = sorted(p for p in (shared_data / "dicom").rglob("*.dcm"))
    assert len(files) == 522
    syntaxes = set()
    for path in files:
        _assert_same_as_pydicom(path)
        syntaxes.add(str(scan_header(path, KEYWORDS).file_meta.TransferSyntaxUID))
    assert syntaxes == {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


def test_phantom_files_read_as_pydicom_reads_them(tmp_path):
    from petctiqa.phantom import write_phantom_study

    write_phantom_study(tmp_path, 1, seed=0, ct_matrix=32, pet_matrix=16)
    files = sorted(tmp_path.rglob("*.dcm"))
    assert len(files) > 50
    for path in files[::7]:
        _assert_same_as_pydicom(path)


def _slice(dicom_writers, tmp_path: Path, name: str = "a.dcm", **changes) -> Path:
    ds = dicom_writers.image_slice(
        "CT", generate_uid(), (0.0, 0.0, 5.0), np.arange(16).reshape(4, 4)
    )
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return dicom_writers.save(ds, tmp_path / name)


def test_values_decode_like_pydicom(tmp_path, dicom_writers):
    path = _slice(
        dicom_writers,
        tmp_path,
        SeriesDescription="  lead and trail  ",  # LO keeps leading spaces, drops trailing
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
        SliceThickness=" 2.5 ",
        SeriesNumber="  7",
        AcquisitionDate="",
    )
    scanned = scan_header(path, KEYWORDS)
    assert scanned.SeriesDescription == "  lead and trail"
    assert scanned.ImageType == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert scanned.SliceThickness == 2.5 and scanned.SeriesNumber == 7
    assert scanned.ImagePositionPatient == [0.0, 0.0, 5.0]
    assert scanned.Rows == 4 and scanned.BitsAllocated == 16
    assert "AcquisitionDate" in scanned and scanned.AcquisitionDate == ""  # empty text: ""
    assert "NumberOfFrames" not in scanned and scanned.get("NumberOfFrames", 1) == 1
    _assert_same_as_pydicom(path)


def test_implicit_vr_file(tmp_path, dicom_writers):
    ds = dicom_writers.image_slice("PT", generate_uid(), (1.0, 2.0, 3.0), np.ones((4, 4)))
    dicom_writers.add_pet_tags(ds)  # a sequence before Units, written with a defined length
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = tmp_path / "implicit.dcm"
    ds.save_as(path, enforce_file_format=True, implicit_vr=True, little_endian=True)
    _assert_same_as_pydicom(path)
    assert scan_header(path, KEYWORDS).Units == "BQML"


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
@pytest.mark.parametrize(
    "case",
    ["no preamble", "big endian", "non-ASCII text", "cut header", "wanted sequence", "odd IS"],
)
def test_files_it_cannot_read_plainly_go_to_pydicom(tmp_path, dicom_writers, case):
    path = _slice(dicom_writers, tmp_path)
    if case == "no preamble":
        path.write_bytes(path.read_bytes()[132:])
    elif case == "big endian":
        raw = bytearray(path.read_bytes())
        at = raw.index(b"1.2.840.10008.1.2.1\0")
        raw[at : at + 20] = b"1.2.840.10008.1.2.2\0"
        path.write_bytes(bytes(raw))
    elif case == "non-ASCII text":
        path = _slice(dicom_writers, tmp_path, SeriesDescription="Thorax Ganzkörper")
    elif case == "cut header":
        path.write_bytes(path.read_bytes()[:400])
    elif case == "wanted sequence":
        ds = pydicom.dcmread(path)
        item = pydicom.Dataset()
        item.LUTExplanation = "HU"
        ds.ModalityLUTSequence = [item]
        ds.save_as(path)
    elif case == "odd IS":
        path = _slice(dicom_writers, tmp_path, SeriesNumber="7.0")  # pydicom repairs and warns
    assert scan_header(path, KEYWORDS) is None


def test_only_the_requested_keywords_can_be_looked_up(tmp_path, dicom_writers):
    scanned = scan_header(_slice(dicom_writers, tmp_path), frozenset({"Rows"}))
    assert scanned.Rows == 4
    with pytest.raises(KeyError, match="InstanceNumber was not read"):
        scanned.get("InstanceNumber")
    with pytest.raises(AttributeError, match="Columns was not read"):
        scanned.Columns  # noqa: B018 - attribute access is the API under test
    with pytest.raises(ValueError, match="unknown DICOM keyword"):
        scan_header(tmp_path / "a.dcm", frozenset({"NoSuchKeyword"}))


def test_index_and_volumes_do_not_depend_on_the_reader(shared_data, monkeypatch):
    root = shared_data / "dicom" / "STS_001"
    fast = index_dicom_tree(root)
    files = [f for series in fast.series for f in series.files][::10]
    fast_files = [index_file(f) for f in files]
    fast_volumes = [volume.load_volume(series) for series in fast.series]
    for module in (index, volume):
        monkeypatch.setattr(module, "scan_header", lambda path, keywords: None)
    assert index_dicom_tree(root) == fast
    assert [index_file(f) for f in files] == fast_files
    for fast_volume, series in zip(fast_volumes, fast.series, strict=True):
        slow = volume.load_volume(series)
        assert np.array_equal(slow.array, fast_volume.array)
        assert np.array_equal(slow.affine, fast_volume.affine)
        assert slow.sop_instance_uids == fast_volume.sop_instance_uids
