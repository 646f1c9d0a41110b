from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet

from petctiqa.dicom.index import describe_skipped, index_dicom_tree, is_nbia_metadata
from petctiqa.errors import DicomError


def test_real_tree_groups_series_and_skips_readme(shared_data):
    index = index_dicom_tree(shared_data / "dicom")
    summary = [
        (s.patient_id, s.modality, s.n_slices, s.rows, s.columns, s.units) for s in index.series
    ]
    assert summary == [
        ("CRLM-CT-1004", "CT", 41, 512, 512, "HU"),
        ("STS_001", "PT", 267, 128, 128, "BQML"),
        ("STS_001", "PT", 59, 43, 41, "GML"),
        ("STS_001", "CT", 59, 202, 198, "HU"),
        ("STS_002", "CT", 48, 143, 161, "HU"),
        ("STS_002", "PT", 48, 27, 30, "GML"),
    ]
    assert [(s.path.name, s.reason) for s in index.skipped] == [("README.md", "not a DICOM file")]
    wholebody = index.series[1]
    assert wholebody.pixel_spacing == (4.6875, 4.6875)
    assert wholebody.study_date == "20000907"
    assert len(wholebody.slice_geometry) == wholebody.n_slices
    # the three STS_001 series share study and frame of reference
    sts = [s for s in index.series if s.patient_id == "STS_001"]
    assert len({(s.study_uid, s.frame_of_reference_uid) for s in sts}) == 1


def _write_dicomdir(scratch, target, w) -> None:
    """A real DICOMDIR (pydicom FileSet) for a 2-slice series; only the DICOMDIR file is copied
    to ``target`` (its instances stay in ``scratch`` so they do not join the indexed tree)."""
    _, paths = w.write_series(scratch / "src", "CT", [0, 2])
    fileset = FileSet()
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.StudyTime, ds.StudyID = "SYN", "120000", "1"
        fileset.add(ds)
    fileset.write(scratch / "media")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(scratch / "media" / "DICOMDIR", target)


def test_skips_non_image_objects_and_junk(tmp_path, tmp_path_factory, dicom_writers, shared_data):
    w = dicom_writers
    w.write_series(tmp_path / "Subject" / "Study" / "CT", "CT", [0, 2, 4])
    _write_dicomdir(tmp_path_factory.mktemp("fileset"), tmp_path / "CD" / "DICOMDIR", w)
    rt = w.base_dataset(w.RTSTRUCT_STORAGE, "RTSTRUCT", "1.2.3.4.5")
    w.save(rt, tmp_path / "Subject" / "Study" / "RT" / "1-1.dcm")
    seg = w.base_dataset(w.SEG_STORAGE, "SEG", "1.2.3.4.6")
    seg.Rows, seg.Columns, seg.NumberOfFrames = 8, 8, 3
    w.save(seg, tmp_path / "Subject" / "Study" / "SEG" / "1-1.dcm")
    (tmp_path / "metadata.csv").write_text("Series UID,Collection\n")
    (tmp_path / "Subject" / "Study" / "CT" / "broken.dcm").write_bytes(
        b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff"
    )
    real = (shared_data / "dicom" / "STS_002" / "CT_crop" / "000000.dcm").read_bytes()
    (tmp_path / "Subject" / "Study" / "CT" / "truncated.dcm").write_bytes(real[:3000])
    (tmp_path / "empty.dcm").write_bytes(b"")

    index = index_dicom_tree(tmp_path)
    assert [(s.modality, s.n_slices) for s in index.series] == [("CT", 3)]
    reasons = {p.path.relative_to(tmp_path).as_posix(): p.reason for p in index.skipped}
    assert reasons["metadata.csv"] == "not a DICOM file"
    assert reasons["empty.dcm"] == "empty file (0 bytes)"
    assert reasons["Subject/Study/RT/1-1.dcm"] == "non-image object: RTSTRUCT (RT structure set)"
    assert reasons["Subject/Study/SEG/1-1.dcm"] == "non-image object: SEG (segmentation)"
    assert reasons["Subject/Study/CT/broken.dcm"] == "missing SeriesInstanceUID"
    assert reasons["Subject/Study/CT/truncated.dcm"] == (
        "truncated file (3000 bytes, pixel data alone needs 46046)"
    )
    dicomdir = pydicom.dcmread(tmp_path / "CD" / "DICOMDIR", stop_before_pixels=True)
    assert dicomdir.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    assert reasons["CD/DICOMDIR"] == "DICOMDIR (media directory, not an image)"
    assert len(index.skipped) == 7
    # build-dataset's summary: counts per reason, most frequent first, one example each; the
    # metadata.csv of an NBIA download is recognised (build-dataset does not warn about it)
    assert describe_skipped(index.skipped, tmp_path) == (
        "1 DICOMDIR (media directory, not an image) (e.g. CD/DICOMDIR), "
        "1 empty file (0 bytes) (e.g. empty.dcm), "
        "1 missing SeriesInstanceUID (e.g. Subject/Study/CT/broken.dcm), "
        "1 non-image object: RTSTRUCT (RT structure set) (e.g. Subject/Study/RT/1-1.dcm), "
        "1 non-image object: SEG (segmentation) (e.g. Subject/Study/SEG/1-1.dcm), "
        "1 not a DICOM file (e.g. metadata.csv), "
        "1 truncated file (3000 bytes, pixel data alone needs 46046) "
        "(e.g. Subject/Study/CT/truncated.dcm)"
    )
    assert [s.path.name for s in index.skipped if is_nbia_metadata(s)] == ["metadata.csv"]


def test_file_without_preamble_is_read(tmp_path, dicom_writers):
    w = dicom_writers
    _, paths = w.write_series(tmp_path / "a", "CT", [0, 2])
    raw = tmp_path / "flat" / "raw_no_preamble"
    raw.parent.mkdir()
    ds = w.pydicom.dcmread(paths[0])
    ds2 = w.image_slice(
        "CT", str(ds.SeriesInstanceUID), (-8.0, -8.0, 4.0), np.zeros((8, 8), np.int16)
    )
    # write the data set alone (no preamble, no file meta), as old ACR-NEMA style files are
    ds2.file_meta = None
    del ds2.file_meta
    ds2.save_as(raw, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert raw.read_bytes()[128:132] != b"DICM"
    index = index_dicom_tree(tmp_path)
    assert [s.n_slices for s in index.series] == [3]
    assert not index.skipped


def test_duplicate_instance_copy_is_skipped(tmp_path, dicom_writers):
    _, paths = dicom_writers.write_series(tmp_path / "s", "CT", [0, 2, 4])
    shutil.copy(paths[1], tmp_path / "copy.dcm")
    index = index_dicom_tree(tmp_path)
    assert index.series[0].n_slices == 3
    assert [s.path.name for s in index.skipped] == ["copy.dcm"] or [
        s.path.name for s in index.skipped
    ] == ["001.dcm"]
    assert index.skipped[0].reason.startswith("duplicate SOPInstanceUID")


def test_localizer_and_missing_geometry_are_skipped(tmp_path, dicom_writers):
    w = dicom_writers
    uid, _ = w.write_series(tmp_path / "s", "CT", [0, 2])
    scout = w.image_slice("CT", uid, (0.0, 0.0, 0.0), np.zeros((8, 8), np.int16))
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    w.save(scout, tmp_path / "s" / "scout.dcm")
    nogeo = w.image_slice("CT", uid, (0.0, 0.0, 9.0), np.zeros((8, 8), np.int16))
    del nogeo.ImagePositionPatient
    w.save(nogeo, tmp_path / "s" / "nogeo.dcm")
    index = index_dicom_tree(tmp_path)
    assert index.series[0].n_slices == 2
    assert {s.path.name: s.reason for s in index.skipped} == {
        "nogeo.dcm": "CT image without ImagePositionPatient/ImageOrientationPatient",
        "scout.dcm": "CT localizer (scout) image",
    }


def test_not_a_folder_is_an_error(tmp_path):
    with pytest.raises(DicomError, match="not a folder"):
        index_dicom_tree(tmp_path / "missing")


def test_base_dataset_helper_is_a_dataset(dicom_writers):
    assert isinstance(dicom_writers.base_dataset("1.2", "CT", "1.3"), Dataset)


def test_parallel_index_equals_serial_index(shared_data):
    serial = index_dicom_tree(shared_data / "dicom")
    parallel = index_dicom_tree(shared_data / "dicom", jobs=2)
    assert parallel == serial
    assert sum(s.n_slices for s in parallel.series) == 41 + 267 + 59 + 59 + 48 + 48
