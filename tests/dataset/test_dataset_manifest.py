from __future__ import annotations

import pytest

from petctiqa.dataset.manifest import MANIFEST_COLUMNS, ImageRecord, read_manifest, write_manifest
from petctiqa.errors import DatasetError

CONTRACT_COLUMNS = (
    "image,image_id,patient_id,slice_id,slice_number,slice_position_mm,study_uid,ct_series_uid,"
    "pet_series_uid,ct_sop_uid,frame_of_reference_uid,reference,poisson_level,gaussian_level,"
    "jpeg_level,poisson_form,poisson_value,gaussian_sigma,jpeg_quality,seed,sha256"
)


def _record(code: str = "p1g0j2") -> ImageRecord:
    return ImageRecord(
        image=f"images/P1_s3_{code}.jpg",
        image_id=f"P1_s3_{code}",
        patient_id="P1",
        slice_id="P1_s3",
        slice_number=3,
        slice_position_mm=-123.25,
        study_uid="1.2.3",
        ct_series_uid="1.2.3.4",
        pet_series_uid="1.2.3.5",
        ct_sop_uid="1.2.3.4.77",
        frame_of_reference_uid="1.2.3.9",
        reference="references/P1_s3.png",
        poisson_level=1,
        gaussian_level=0,
        jpeg_level=2,
        poisson_form="impulse",
        poisson_value=0.005,
        gaussian_sigma=0.0,
        jpeg_quality=40,
        seed=0,
        sha256="ab" * 32,
    )


def test_columns_follow_the_contract():
    assert ",".join(MANIFEST_COLUMNS) == CONTRACT_COLUMNS


def test_round_trip_keeps_types_and_values(tmp_path):
    path = tmp_path / "manifest.csv"
    records = [_record("p1g0j2"), _record("p0g0j0")]
    write_manifest(path, records)
    lines = path.read_text().splitlines()
    assert lines[0] == CONTRACT_COLUMNS
    assert lines[1].startswith("images/P1_s3_p1g0j2.jpg,P1_s3_p1g0j2,P1,P1_s3,3,-123.25,")
    assert read_manifest(path) == records


def test_bad_manifest_names_the_column(tmp_path):
    path = tmp_path / "manifest.csv"
    write_manifest(path, [_record()])
    text = path.read_text().replace(",40,0,", ",forty,0,")
    path.write_text(text)
    with pytest.raises(DatasetError, match="column 'jpeg_quality' has bad value 'forty'"):
        read_manifest(path)
    path.write_text("image,mos\n")
    with pytest.raises(DatasetError, match="lacks column 'image_id'"):
        read_manifest(path)
