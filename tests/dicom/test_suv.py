from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from pydicom.dataset import Dataset

from petctiqa.dicom.index import index_dicom_tree
from petctiqa.dicom.suv import (
    load_pet_suv,
    load_pet_suv_with_parameters,
    suv_factor,
    suv_parameters,
)
from petctiqa.dicom.volume import load_volume
from petctiqa.errors import DicomError

START_FACTOR = 70000.0 / (3.7e8 * 2.0 ** (-3600.0 / 6586.2))


def _header(dicom_writers, **tags) -> Dataset:
    ds = dicom_writers.base_dataset(dicom_writers.PET_STORAGE, "PT", "1.2.3")
    return dicom_writers.add_pet_tags(ds, **tags)


def test_start_decay(dicom_writers):
    params = suv_parameters(_header(dicom_writers))
    assert params.uptake_time_s == 3600.0
    assert params.factor == pytest.approx(START_FACTOR, rel=1e-12)
    assert params.factor == pytest.approx(2.7634e-4, rel=1e-4)


def test_admin_decay_uses_the_injected_dose(dicom_writers):
    assert suv_factor(_header(dicom_writers, decay="ADMIN")) == pytest.approx(70000.0 / 3.7e8)


def test_gml_passes_through(dicom_writers):
    header = _header(dicom_writers, units="GML", weight=None, dose=None)
    assert suv_factor(header) == 1.0
    header.SUVType = "LBM"
    with pytest.raises(DicomError, match="SUVType LBM"):
        suv_factor(header)


def test_scan_time_is_earliest_acquisition_when_series_time_is_later(dicom_writers):
    header = _header(dicom_writers, series_time="113000", acquisition_time="110000")
    assert suv_parameters(header).uptake_time_s == 3600.0
    # acquisition times of other slices count too
    later = _header(dicom_writers, series_time="113000", acquisition_time="112000")
    params = suv_parameters(later, [datetime(2024, 1, 2, 11, 0, 0), None])
    assert params.uptake_time_s == 3600.0
    # an acquisition after SeriesTime does not move the scan start
    early_series = _header(dicom_writers, series_time="110000", acquisition_time="111500")
    assert suv_parameters(early_series).uptake_time_s == 3600.0


def test_midnight_crossing(dicom_writers):
    # injection 23:30 (time only), scan 00:20 the next day -> dt = 50 min
    header = _header(
        dicom_writers, start_time="233000", series_time="002000", acquisition_time=None
    )
    assert suv_parameters(header).uptake_time_s == 3000.0
    # with an explicit injection date-time the date is taken as given
    header = _header(
        dicom_writers,
        start_time=None,
        start_datetime="20240101233000",
        series_time="002000",
        acquisition_time=None,
    )
    params = suv_parameters(header)
    assert params.uptake_time_s == 3000.0
    assert params.injection_time == datetime(2024, 1, 1, 23, 30)


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"weight": None}, "missing PatientWeight"),
        ({"weight": "0"}, "PatientWeight \\(kg\\) is 0"),
        ({"dose": None}, "missing RadionuclideTotalDose"),
        ({"half_life": None}, "missing RadionuclideHalfLife"),
        ({"corrected": ("ATTN",)}, "CorrectedImage lacks DECY"),
        ({"corrected": ()}, "CorrectedImage lacks ATTN/DECY"),
        ({"decay": "NONE"}, "DecayCorrection NONE"),
        ({"units": "CNTS"}, "Units CNTS cannot be converted"),
        ({"start_time": None}, "injection time unknown"),
        ({"start_datetime": "20240102120000"}, "negative uptake time -3600 s"),
        ({"start_time": "113000", "acquisition_time": None}, "negative uptake time"),
    ],
)
def test_bad_headers_give_clear_errors(dicom_writers, tags, message):
    with pytest.raises(DicomError, match=message):
        suv_factor(_header(dicom_writers, **tags))


def test_synthetic_series_suv_and_error_names_series(tmp_path, dicom_writers):
    w = dicom_writers
    w.write_series(tmp_path / "pet", "PT", [0.0, 3.0, 6.0], slope=0.5)
    series = index_dicom_tree(tmp_path).series[0]
    volume = load_pet_suv(series)
    assert volume.unit == "SUVbw"
    expected = np.array([1, 101, 201]) * 0.5 * START_FACTOR
    np.testing.assert_allclose(volume.array[:, 0, 0], expected, rtol=1e-6)

    w.write_series(tmp_path / "pet2", "PT", [0.0, 3.0], pet_tags={"weight": None})
    series = [s for s in index_dicom_tree(tmp_path).series if s.n_slices == 2][0]
    with pytest.raises(
        DicomError, match=r"PT series 'synthetic PT' in .*pet2: missing PatientWeight"
    ):
        load_pet_suv(series)


@pytest.fixture(scope="module")
def sts001_pets(shared_data):
    index = index_dicom_tree(shared_data / "dicom" / "STS_001")
    wholebody = next(s for s in index.series if s.units == "BQML")
    crop = next(s for s in index.series if s.units == "GML")
    return wholebody, crop


def test_golden_sts001_wholebody_suv_matches_gml_crop(sts001_pets):
    wholebody, crop = sts001_pets
    suv, params = load_pet_suv_with_parameters(wholebody)
    assert params.uptake_time_s == 2711.0
    assert params.decay_correction == "START"
    assert params.factor == pytest.approx(2.42903e-4, abs=5e-10)
    # whole-body SUVmax (bladder, file 1-205.dcm) and the crop's SUVmax
    assert float(suv.array.max()) == pytest.approx(66.5215, abs=1e-3)
    crop_suv = load_pet_suv(crop)
    assert crop_suv.unit == "SUVbw"
    assert float(crop_suv.array.max()) == pytest.approx(25.4123, abs=1e-3)

    # voxel for voxel at matching patient positions
    k, j, i = np.indices(crop_suv.shape)
    xyz = crop_suv.voxel_to_patient(np.stack([i, j, k], axis=-1).reshape(-1, 3))
    ijk_float = suv.patient_to_voxel(xyz)
    ijk = np.rint(ijk_float).astype(int)
    assert np.abs(ijk_float - ijk).max() < 0.01  # the crop lies on the whole-body grid
    wb_values = suv.array[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
    crop_values = crop_suv.array.reshape(-1)
    # the crop's stored values are rounded: 16-bit integers times a per-slice RescaleSlope of
    # up to 0.00078 SUV (measured: max |delta SUV| 0.00078, max |ratio - 1| 0.00077 at SUV > 1),
    # so: |delta SUV| < 0.001 on every crop voxel and ratio 1.000 +- 0.001 where SUV > 1
    assert crop_values.size == 59 * 43 * 41
    assert float(np.abs(wb_values - crop_values).max()) < 0.001
    hot = crop_values > 1.0
    assert hot.sum() > 15000
    ratio = wb_values[hot] / crop_values[hot]
    assert float(np.abs(ratio - 1.0).max()) < 0.001
    assert float(np.median(ratio)) == pytest.approx(1.0, abs=1e-4)
    # the voxel the project notes quote as 20.540 (crop slice 58, row 24, column 9)
    assert float(crop_suv.array[58, 24, 9]) == pytest.approx(20.540, abs=1e-3)
    assert float(suv.array[58, 69, 68]) == pytest.approx(20.540, abs=1e-3)


def test_gml_volume_in_stored_unit(sts001_pets):
    _, crop = sts001_pets
    volume = load_volume(crop)
    assert volume.unit == "GML"
    assert volume.shape == (59, 43, 41)
