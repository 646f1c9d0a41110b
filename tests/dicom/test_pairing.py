from __future__ import annotations

import pytest

from petctiqa.dicom.index import index_dicom_tree
from petctiqa.dicom.pairing import find_pet_ct_pairs, unpaired_pet_series


@pytest.fixture(scope="module")
def real_index(shared_data):
    return index_dicom_tree(shared_data / "dicom")


def test_real_pairs(real_index):
    pairs = find_pet_ct_pairs(real_index)
    summary = [(p.patient_id, p.pet.series_description, p.pet.units, p.ct.n_slices) for p in pairs]
    assert summary == [
        ("STS_001", "PET AC", "BQML", 59),
        ("STS_001", "IBSI_1_STS_001_PET_image", "GML", 59),
        ("STS_002", "IBSI_1_STS_002_PET_image", "GML", 48),
    ]
    wholebody = pairs[0]
    assert wholebody.ct.series_description == "IBSI_1_STS_001_CT_image"
    assert wholebody.study_uid == wholebody.pet.study_uid == wholebody.ct.study_uid
    assert wholebody.frame_of_reference_uid == wholebody.ct.frame_of_reference_uid
    # the CT crop (z -881.32 .. -691.66) lies inside the whole-body PET (-881.30 .. -11.48)
    assert wholebody.overlap_mm == pytest.approx((-881.3, -691.66), abs=1e-6)
    assert pairs[2].overlap_mm == pytest.approx((-629.02, -475.35), abs=1e-6)
    # CRLM-CT-1004 is CT only: no pair, and no PET left unpaired
    assert all(p.patient_id != "CRLM-CT-1004" for p in pairs)
    assert unpaired_pet_series(real_index) == []


def test_prefers_the_ct_covering_the_pet_and_rejects_other_frames(tmp_path, dicom_writers):
    w = dicom_writers
    w.write_series(tmp_path / "pet", "PT", [0.0, 3.0, 6.0, 9.0, 12.0])
    short_uid, _ = w.write_series(tmp_path / "ct_short", "CT", [0.0, 2.0, 4.0])
    long_uid, _ = w.write_series(tmp_path / "ct_long", "CT", [x * 2.0 for x in range(8)])
    pairs = find_pet_ct_pairs(index_dicom_tree(tmp_path))
    assert len(pairs) == 1
    assert pairs[0].ct.series_uid == long_uid
    assert pairs[0].overlap_mm == (0.0, 12.0)


def test_pet_without_ct_in_its_frame_is_unpaired(tmp_path, dicom_writers):
    w = dicom_writers
    w.write_series(tmp_path / "pet", "PT", [0.0, 3.0])
    w.write_series(tmp_path / "ct", "CT", [100.0, 102.0])  # same frame, no z overlap
    index = index_dicom_tree(tmp_path)
    assert find_pet_ct_pairs(index) == []
    [(pet, reason)] = unpaired_pet_series(index)
    assert pet.modality == "PT"
    assert reason == "CT series 'synthetic CT' does not overlap the PET range"
