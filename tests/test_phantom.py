"""The synthetic thorax PET/CT phantom: real DICOM, realistic values, deterministic output."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from petctiqa.phantom import (
    F18_HALF_LIFE_S,
    PhantomStudy,
    phantom_uid,
    write_phantom_study,
    write_phantom_tree,
)
from petctiqa_cli.main import cli

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"


def _read_series(files: tuple[Path, ...]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f) for f in files]


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def full_study(tmp_path_factory) -> tuple[PhantomStudy, list, list]:
    """One full-size patient (512x512 CT, 128x128 PET)."""
    study = write_phantom_study(tmp_path_factory.mktemp("full"), 1, seed=0)
    return study, _read_series(study.ct_files), _read_series(study.pet_files)


def _nearest_voxel(ds: list[pydicom.Dataset], point: tuple[float, float, float]):
    """(slice index, row, column) of the voxel nearest ``point`` in a series sorted top-down."""
    zs = np.array([float(d.ImagePositionPatient[2]) for d in ds])
    k = int(np.argmin(np.abs(zs - point[2])))
    x0, y0 = (float(v) for v in ds[k].ImagePositionPatient[:2])
    row_mm, col_mm = (float(v) for v in ds[k].PixelSpacing)
    return k, int(round((point[1] - y0) / row_mm)), int(round((point[0] - x0) / col_mm))


def _suv_per_bqml(header: pydicom.Dataset) -> float:
    """Body-weight SUV per Bq/ml from the headers (DecayCorrection START: decay to SeriesTime)."""
    drug = header.RadiopharmaceuticalInformationSequence[0]
    start = dt.datetime.strptime(drug.RadiopharmaceuticalStartTime[:6], "%H%M%S")
    scan = dt.datetime.strptime(header.SeriesTime[:6], "%H%M%S")
    elapsed = (scan - start).total_seconds()
    decayed = float(drug.RadionuclideTotalDose) * 2 ** (-elapsed / float(drug.RadionuclideHalfLife))
    return float(header.PatientWeight) * 1000.0 / decayed


def test_every_file_is_standard_dicom_that_pydicom_rewrites_byte_for_byte(full_study):
    study, ct, pet = full_study
    assert len(ct) == len(study.ct_files) >= 46 and len(pet) == len(study.pet_files) >= 70
    for path, ds, sop_class, modality in [
        *((p, d, CT_STORAGE, "CT") for p, d in zip(study.ct_files, ct, strict=True)),
        *((p, d, PET_STORAGE, "PT") for p, d in zip(study.pet_files, pet, strict=True)),
    ]:
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == sop_class
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.Modality == modality
        # pydicom's own writer reproduces the file exactly: tag order, lengths, meta group
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        assert buffer.getvalue() == path.read_bytes()
    uids = {d.SOPInstanceUID for d in ct + pet}
    assert len(uids) == len(ct) + len(pet)
    assert all(len(u) <= 64 and re.fullmatch(r"2\.25\.[1-9][0-9]*", u) for u in uids)


def test_nbia_layout_and_shared_study_frame_of_reference(full_study):
    study, ct, pet = full_study
    rel = study.ct_files[0].relative_to(study.ct_dir.parents[2])
    assert re.fullmatch(
        r"PHANTOM-0001/\d\d-\d\d-\d{4}-NA-PET-CT-\d{5}/2\.000000-CT Thorax 5mm-\d{5}/1-01\.dcm",
        rel.as_posix(),
    )
    assert study.ct_dir.parents[2].name == "Lung-PET-CT-Dx-Phantom"
    assert study.ct_dir.parent.name.endswith(study.study_uid[-5:])
    assert study.pet_dir.name == f"4.000000-PET AC-{study.pet_series_uid[-5:]}"
    assert {d.StudyInstanceUID for d in ct + pet} == {study.study_uid}
    assert {d.FrameOfReferenceUID for d in ct + pet} == {study.frame_of_reference_uid}
    assert {d.SeriesInstanceUID for d in ct} == {study.ct_series_uid}
    assert {d.SeriesInstanceUID for d in pet} == {study.pet_series_uid}
    assert study.ct_series_uid != study.pet_series_uid
    assert {d.PatientID for d in ct + pet} == {"PHANTOM-0001"}


def test_ct_and_pet_geometry_differ_but_are_consistent(full_study):
    _, ct, pet = full_study
    ct0, pet0 = ct[0], pet[0]
    assert (ct0.Rows, ct0.Columns, pet0.Rows, pet0.Columns) == (512, 512, 128, 128)
    assert 0.9 <= float(ct0.PixelSpacing[0]) <= 1.0
    assert float(pet0.PixelSpacing[0]) == pytest.approx(4.6875)
    assert [float(v) for v in ct0.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    ct_z = np.array([float(d.ImagePositionPatient[2]) for d in ct])
    pet_z = np.array([float(d.ImagePositionPatient[2]) for d in pet])
    np.testing.assert_allclose(np.diff(ct_z), -5.0, atol=1e-3)
    np.testing.assert_allclose(np.diff(pet_z), -3.27, atol=1e-3)
    assert float(ct0.SliceThickness) == 5.0 and float(pet0.SliceThickness) == 3.27
    assert [d.InstanceNumber for d in ct] == list(range(1, len(ct) + 1))
    # the PET axial range covers the CT range; origins differ
    assert pet_z.max() > ct_z.max() and pet_z.min() < ct_z.min()
    assert list(ct0.ImagePositionPatient[:2]) != list(pet0.ImagePositionPatient[:2])
    assert all(float(d.SliceLocation) == float(d.ImagePositionPatient[2]) for d in ct + pet)


def test_ct_numbers_at_organ_landmarks(full_study):
    study, ct, _ = full_study
    hu = np.stack([d.pixel_array.astype(np.float64) * 1 - 1024 for d in ct])
    assert all(float(d.RescaleIntercept) == -1024 and float(d.RescaleSlope) == 1 for d in ct)
    textbook = {  # HU ranges a radiologist expects
        "liver": (45, 75),
        "right lung": (-900, -780),
        "left lung": (-900, -780),
        "descending aorta": (30, 50),
        "vertebral body": (150, 300),
        "subcutaneous fat": (-130, -70),
        "chest wall muscle": (35, 60),
        "couch shell": (500, 1000),
        "outside air": (-1024, -990),
    }
    tissues = {m.name: m.tissue for m in study.landmarks}
    assert tissues["liver"] == "liver" and tissues["vertebral body"] == "vertebral marrow"
    assert tissues["right lung"] == tissues["left lung"] == "lung"
    for mark in study.landmarks:
        k, j, i = _nearest_voxel(ct, mark.position_mm)
        rows = slice(j, j + 1) if mark.name == "couch shell" else slice(j - 2, j + 3)
        measured = float(np.median(hu[k, rows, i - 4 : i + 5]))
        low, high = textbook[mark.name]
        assert low <= measured <= high, (mark.name, measured)
        if mark.name != "outside air":  # air is clipped at -1024 by the uint16 storage
            assert measured == pytest.approx(mark.hu, abs=12), mark.name


def test_pet_tags_and_suv_from_headers(full_study):
    study, _, pet = full_study
    first = pet[0]
    assert first.Units == "BQML" and first.DecayCorrection == "START"
    assert {"ATTN", "DECY"} <= set(first.CorrectedImage)
    drug = first.RadiopharmaceuticalInformationSequence[0]
    assert float(drug.RadionuclideHalfLife) == F18_HALF_LIFE_S == 6586.2
    assert "Fluorodeoxyglucose" in drug.Radiopharmaceutical
    assert float(drug.RadionuclideTotalDose) == pytest.approx(study.injected_dose_bq)
    assert 3.0e6 * study.weight_kg < study.injected_dose_bq < 4.5e6 * study.weight_kg
    assert float(first.PatientWeight) == pytest.approx(study.weight_kg)
    # two bed positions: the series time is the earliest acquisition time
    times = sorted({d.AcquisitionTime for d in pet})
    assert len(times) == 2 and times[0] == first.SeriesTime
    factor = _suv_per_bqml(first)
    assert factor == pytest.approx(study.weight_kg * 1000 / study.decayed_dose_bq, rel=1e-9)
    slopes = {float(d.RescaleSlope) for d in pet}
    assert len(slopes) > len(pet) // 2  # per-slice slopes, as scanners write them
    assert all(d.pixel_array.dtype == np.uint16 and d.pixel_array.max() <= 32767 for d in pet)


def _pet_suv_volume(pet: list[pydicom.Dataset]) -> np.ndarray:
    factor = _suv_per_bqml(pet[0])
    return np.stack([d.pixel_array * float(d.RescaleSlope) * factor for d in pet])


def test_pet_suv_matches_intended_liver_lesions_and_zero_outside(full_study):
    study, ct, pet = full_study
    suv = _pet_suv_volume(pet)
    marks = {m.name: m for m in study.landmarks}
    liver = marks["liver"]
    k, j, i = _nearest_voxel(pet, liver.position_mm)
    assert 2.0 <= liver.suv <= 3.0
    region = suv[k - 2 : k + 3, j - 2 : j + 3, i - 2 : i + 3]  # 23 x 23 x 16 mm
    assert region.mean() == pytest.approx(liver.suv, rel=0.05)
    assert 0.04 < region.std() / region.mean() < 0.25  # PET-like noise, not a flat image
    lung = marks["right lung"]
    k, j, i = _nearest_voxel(pet, lung.position_mm)
    assert suv[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2].mean() == pytest.approx(
        lung.suv, rel=0.2
    )
    assert 1 <= len(study.lesions) <= 3
    for lesion in study.lesions:
        assert 5 <= lesion.suv <= 15 and lesion.diameter_mm >= 16
        k, j, i = _nearest_voxel(pet, lesion.center_mm)
        core = suv[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2]
        # the 6 mm FWHM blur leaves the core of a >= 16 mm sphere near its true uptake
        assert core.max() == pytest.approx(lesion.suv, rel=0.15), lesion
        assert core.max() > 2.5 * liver.suv * 0.8
    # no activity in air or in the couch
    air = marks["outside air"].position_mm
    k, j, i = _nearest_voxel(pet, air)
    assert suv[k, j, i] == 0.0
    k, j, i = _nearest_voxel(pet, marks["couch shell"].position_mm)
    assert suv[k, j + 3, i] == 0.0
    assert suv[:, :3, :].max() == 0.0 and suv[:, -3:, :].max() == 0.0


def test_small_matrices_same_anatomy_and_byte_identical_for_same_seed(tmp_path):
    a = write_phantom_study(tmp_path / "a", 2, seed=5, ct_matrix=64, pet_matrix=32)
    b = write_phantom_study(tmp_path / "b", 2, seed=5, ct_matrix=64, pet_matrix=32)
    c = write_phantom_study(tmp_path / "c", 2, seed=6, ct_matrix=64, pet_matrix=32)
    da, db, dc = (_tree_digest(tmp_path / n) for n in "abc")
    assert da == db and len(da) == len(a.ct_files) + len(a.pet_files)
    assert set(da.values()).isdisjoint(dc.values())
    assert a.study_uid == b.study_uid == phantom_uid(5, "PHANTOM-0002", "study") != c.study_uid
    assert a.lesions == b.lesions != c.lesions
    ct = pydicom.dcmread(a.ct_files[0])
    pet = pydicom.dcmread(a.pet_files[0])
    assert ct.pixel_array.shape == (64, 64) and pet.pixel_array.shape == (32, 32)
    assert float(ct.PixelSpacing[0]) * 64 in (480.0, 500.0)
    assert float(pet.PixelSpacing[0]) == 600 / 32
    # rewriting over an existing study replaces it with identical bytes, no leftovers
    write_phantom_study(tmp_path / "a", 2, seed=5, ct_matrix=64, pet_matrix=32)
    assert _tree_digest(tmp_path / "a") == da


def test_patient_index_starts_at_one(tmp_path):
    with pytest.raises(ValueError, match="starts at 1"):
        write_phantom_study(tmp_path, 0)


@pytest.mark.slow
def test_tree_is_independent_of_jobs_and_indexes_into_pet_ct_pairs(tmp_path):
    serial = write_phantom_tree(tmp_path / "s", 3, seed=1, jobs=1, ct_matrix=96, pet_matrix=48)
    parallel = write_phantom_tree(tmp_path / "p", 3, seed=1, jobs=2, ct_matrix=96, pet_matrix=48)
    assert _tree_digest(tmp_path / "s") == _tree_digest(tmp_path / "p")
    assert [s.patient_id for s in serial] == ["PHANTOM-0001", "PHANTOM-0002", "PHANTOM-0003"]
    assert [s.study_uid for s in serial] == [s.study_uid for s in parallel]
    metadata = (tmp_path / "s" / "metadata.csv").read_text().splitlines()
    assert metadata[0].split(",")[:2] == ["Series UID", "Collection"]
    assert len(metadata) == 1 + 2 * 3

    index_module = pytest.importorskip("petctiqa.dicom.index")
    pairing = pytest.importorskip("petctiqa.dicom.pairing")
    volume = pytest.importorskip("petctiqa.dicom.volume")
    suv_module = pytest.importorskip("petctiqa.dicom.suv")
    index = index_module.index_dicom_tree(tmp_path / "s")
    assert [s.path.name for s in index.skipped] == ["metadata.csv"]
    pairs = pairing.find_pet_ct_pairs(index)
    assert [p.patient_id for p in pairs] == ["PHANTOM-0001", "PHANTOM-0002", "PHANTOM-0003"]
    for pair, study in zip(pairs, serial, strict=True):
        assert pair.pet.series_uid == study.pet_series_uid
        assert pair.ct.series_uid == study.ct_series_uid
        assert pair.pet.units == "BQML"
        low, high = pair.overlap_mm
        assert high - low == pytest.approx(5.0 * (len(study.ct_files) - 1), abs=0.01)
    study = serial[0]
    ct = volume.load_volume(pairs[0].ct)
    assert ct.unit == "HU" and ct.shape == (len(study.ct_files), 96, 96)
    pet = suv_module.load_pet_suv(pairs[0].pet)
    assert pet.unit == "SUVbw"
    # the ingest's volumes equal the header arithmetic of this file, voxel for voxel
    pet_headers = _read_series(study.pet_files)
    ct_headers = _read_series(study.ct_files)
    expected_suv = _pet_suv_volume(pet_headers)[::-1]  # files run top-down, volumes bottom-up
    np.testing.assert_allclose(pet.array, expected_suv, rtol=1e-5, atol=1e-6)
    expected_hu = np.stack([d.pixel_array.astype(np.float32) - 1024 for d in ct_headers])[::-1]
    np.testing.assert_array_equal(ct.array, expected_hu)
    liver = next(m for m in study.landmarks if m.name == "liver")
    i, j, k = np.rint(ct.patient_to_voxel(np.array(liver.position_mm))).astype(int)
    assert ct.array[k, j - 1 : j + 2, i - 1 : i + 2].mean() == pytest.approx(liver.hu, abs=25)


def test_cli_writes_the_tree_and_reports(tmp_path):
    result = CliRunner().invoke(
        cli, ["phantom", "--out", str(tmp_path), "--patients", "1", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "PHANTOM-0001: CT" in result.output
    assert "wrote 1 phantom PET/CT studies" in result.output
    files = sorted(tmp_path.rglob("*.dcm"))
    assert len(files) > 100
    assert pydicom.dcmread(files[0], stop_before_pixels=True).PatientID == "PHANTOM-0001"
    help_text = CliRunner().invoke(cli, ["phantom", "--help"]).output
    assert "petctiqa phantom --out phantom/ --patients 3 --seed 7" in help_text
