from __future__ import annotations

import numpy as np
import pytest

from petctiqa.dicom.index import index_dicom_tree
from petctiqa.dicom.volume import apply_rescale, load_volume
from petctiqa.errors import DicomError


def _only_series(root):
    index = index_dicom_tree(root)
    assert len(index.series) == 1, index
    return index.series[0]


def test_slices_sorted_by_position_not_name_or_instance_number(tmp_path, dicom_writers):
    z = [6.0, -3.0, 0.0, 9.0, 3.0]
    # names and InstanceNumbers deliberately disagree with the geometry
    dicom_writers.write_series(
        tmp_path,
        "CT",
        z,
        names=["a.dcm", "e.dcm", "b.dcm", "d.dcm", "c.dcm"],
        instance_numbers=[1, 2, 3, 4, 5],
        slope=2.0,
        intercept=-1024.0,
    )
    volume = load_volume(_only_series(tmp_path))
    np.testing.assert_allclose(volume.slice_positions_mm, [-3.0, 0.0, 3.0, 6.0, 9.0])
    # slice written k-th holds 100k+1 stored -> (100k+1)*2-1024 HU
    written_order = np.argsort(z)
    expected = (100 * written_order + 1) * 2.0 - 1024.0
    np.testing.assert_array_equal(volume.array[:, 0, 0], expected.astype(np.float32))
    assert volume.array.dtype == np.float32 and volume.unit == "HU"
    np.testing.assert_allclose(volume.affine[:3, 3], [-8.0, -8.0, -3.0])
    np.testing.assert_allclose(np.diag(volume.affine)[:3], [2.0, 2.0, 3.0])


def test_feet_first_orientation_normal_points_down(tmp_path, dicom_writers):
    # row cosine (1,0,0), column cosine (0,-1,0): normal = (0,0,-1); positions grow as z falls
    dicom_writers.write_series(tmp_path, "CT", [0.0, 5.0, 10.0], orientation=(1, 0, 0, 0, -1, 0))
    volume = load_volume(_only_series(tmp_path))
    np.testing.assert_allclose(volume.slice_normal, [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(volume.voxel_to_patient(np.array([0, 0, 0]))[2], 10.0)
    np.testing.assert_array_equal(volume.array[:, 0, 0], [201, 101, 1])


def test_per_slice_rescale(tmp_path, dicom_writers):
    w = dicom_writers
    uid, _ = w.write_series(tmp_path, "CT", [0.0, 2.0], slope=1.0)
    ds = w.image_slice(
        "CT", uid, (-8.0, -8.0, 4.0), np.full((8, 8), 7, np.int16), slope=0.5, intercept=10.0
    )
    w.save(ds, tmp_path / "odd.dcm")
    volume = load_volume(_only_series(tmp_path))
    np.testing.assert_array_equal(volume.array[:, 3, 3], [1.0, 101.0, 13.5])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        ("orientation", "mixed ImageOrientationPatient"),
        ("matrix", "mixed image matrix"),
        ("duplicate", "duplicate slice position 2.000 mm"),
        ("gap", "non-uniform slice spacing"),
        ("tilt", "off the slice normal"),
        ("spacing", "mixed PixelSpacing"),
    ],
)
def test_inconsistent_geometry_is_rejected(tmp_path, dicom_writers, mutate, message):
    w = dicom_writers
    uid, _ = w.write_series(tmp_path, "CT", [0.0, 2.0, 4.0, 6.0])
    kwargs = {}
    position = (-8.0, -8.0, 8.0)
    pixels = np.zeros((8, 8), np.int16)
    if mutate == "orientation":
        kwargs["orientation"] = (1, 0, 0, 0, 0, -1)
    elif mutate == "matrix":
        pixels = np.zeros((8, 6), np.int16)
    elif mutate == "duplicate":
        position = (-8.0, -8.0, 2.0)
    elif mutate == "gap":
        position = (-8.0, -8.0, 12.0)
    elif mutate == "tilt":
        position = (-8.0, -5.0, 8.0)
    elif mutate == "spacing":
        kwargs["spacing"] = (2.5, 2.5)
    w.save(w.image_slice("CT", uid, position, pixels, **kwargs), tmp_path / "bad.dcm")
    series = _only_series(tmp_path)
    with pytest.raises(DicomError, match=message) as info:
        load_volume(series)
    assert "CT series 'synthetic CT'" in str(info.value)
    assert "\n" not in str(info.value)


def test_corrupt_pixel_data_names_the_file(tmp_path, dicom_writers):
    w = dicom_writers
    uid, paths = w.write_series(tmp_path, "CT", [0.0, 2.0])
    ds = w.pydicom.dcmread(paths[1])
    ds.PixelData = ds.PixelData[:10]
    ds.save_as(paths[1], enforce_file_format=True)
    series = _only_series(tmp_path)
    with pytest.raises(DicomError, match=r"001\.dcm"):
        load_volume(series)


def test_real_ct_in_hu(shared_data):
    series = _only_series(shared_data / "dicom" / "CRLM-CT-1004")
    volume = load_volume(series)
    assert volume.shape == (41, 512, 512)
    np.testing.assert_allclose(volume.slice_positions_mm[[0, -1]], [-375.0, -175.0])
    # air outside the body is about -1000 HU, padding -3024 (stored 0 - 1024 after rescale)
    assert volume.array.min() == -3024.0
    assert -1010 < float(np.median(volume.array[20, :40, 200:300])) < -990
    assert len(set(volume.sop_instance_uids)) == 41


def test_native_pixels_equal_pydicom_decoder_on_real_slices(shared_data):
    import pydicom

    from petctiqa.dicom.volume import native_pixels

    checked = 0
    for series in index_dicom_tree(shared_data / "dicom").series:
        for path in series.files[:3]:
            ds = pydicom.dcmread(path)
            fast = native_pixels(ds)
            assert fast is not None, path  # all real files are native little-endian 16-bit
            reference = ds.pixel_array
            assert fast.dtype == reference.dtype and np.array_equal(fast, reference)
            checked += 1
    assert checked == 18


def test_native_pixels_leaves_partial_bit_depths_to_pydicom(shared_data):
    import pydicom

    from petctiqa.dicom.volume import native_pixels

    path = index_dicom_tree(shared_data / "dicom").series[0].files[0]
    ds = pydicom.dcmread(path)
    ds.BitsStored = 12
    assert native_pixels(ds) is None
    ds.BitsStored = ds.BitsAllocated
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.2"  # big endian: not native LE
    assert native_pixels(ds) is None


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int8, np.uint8, np.int32])
@pytest.mark.parametrize(
    ("slope", "intercept"), [(1.0, -1024.0), (1.0, 0.0), (1.0, -1000.5), (1.0, 3.3), (0.37, 12.5)]
)
def test_rescale_gives_the_bits_of_the_float64_product_rounded_once(dtype, slope, intercept):
    """The one-pass slope-1 path and the general path agree bit for bit with
    float32(stored * slope) + float32(intercept), over each dtype's whole range."""
    info = np.iinfo(dtype)
    low, high = max(info.min, -(2**20)), min(info.max, 2**20)
    stored = np.random.default_rng(1).integers(low, high, (3, 64, 64), endpoint=True).astype(dtype)
    expected = (stored.astype(np.float64) * slope).astype(np.float32) + np.float32(intercept)
    out = np.empty(stored.shape, np.float32)
    apply_rescale(stored, slope, intercept, out)
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))
