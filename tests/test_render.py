"""Fusion render: PET resampled onto CT in patient coordinates, and the published invariants."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from petctiqa.colormaps import apply_colormap
from petctiqa.dicom.records import SeriesInfo, Volume
from petctiqa.errors import PetctiqaError, ProtocolError
from petctiqa.protocol import RenderSettings, load_dataset_protocol
from petctiqa.render import (
    ct_slice_to_pet_voxels,
    fuse_pet_on_ct,
    render_slice,
    resample_pet_to_ct_slice,
)

DEFAULTS = RenderSettings()


def _series(modality: str, rows: int, cols: int, spacing: float, units: str) -> SeriesInfo:
    return SeriesInfo(
        patient_id="SYN",
        study_uid="1.2.3",
        series_uid=f"1.2.3.{modality}",
        frame_of_reference_uid="1.2.3.9",
        modality=modality,
        series_description="",
        study_description="",
        series_number=1,
        rows=rows,
        columns=cols,
        pixel_spacing=(spacing, spacing),
        slice_thickness=None,
        units=units,
        files=(),
    )


def _volume(array: np.ndarray, spacing: float, step: float, origin, modality: str, unit: str):
    affine = np.diag([spacing, spacing, step, 1.0])
    affine[:3, 3] = origin
    n, rows, cols = array.shape
    return Volume(
        array=array.astype(np.float32),
        affine=affine,
        unit=unit,
        series=_series(modality, rows, cols, spacing, unit),
        sop_instance_uids=tuple(str(i) for i in range(n)),
    )


def _linear(xyz: np.ndarray) -> np.ndarray:
    return 5.0 + 0.01 * xyz[..., 0] - 0.02 * xyz[..., 1] + 0.03 * xyz[..., 2]


@pytest.fixture(scope="module")
def synthetic_pair():
    """PET 128x128 at 4.6875 mm (3.27 mm slices) holding a linear function of patient mm;
    CT 512x512 at 0.977 mm (2.5 mm slices) with a different origin."""
    pet = _volume(
        np.zeros((40, 128, 128)), 4.6875, 3.27, (-297.65625, -250.0, -60.0), "PT", "SUVbw"
    )
    k, j, i = np.indices(pet.shape)
    xyz = pet.voxel_to_patient(np.stack([i, j, k], axis=-1))
    pet = replace(pet, array=_linear(xyz).astype(np.float32))
    ct = _volume(np.full((30, 512, 512), -1000.0), 0.977, 2.5, (-250.0, -200.0, -40.0), "CT", "HU")
    return pet, ct


def test_resampling_reproduces_a_linear_field_in_patient_coordinates(synthetic_pair):
    pet, ct = synthetic_pair
    for ct_slice in (0, 13, 29):
        values = resample_pet_to_ct_slice(pet, ct, ct_slice)
        assert values.dtype == np.float32 and values.shape == (512, 512)
        jj, ii = np.mgrid[0:512, 0:512]
        xyz = ct.voxel_to_patient(np.stack([ii, jj, np.full_like(ii, ct_slice)], axis=-1))
        coords = ct_slice_to_pet_voxels(pet, ct, ct_slice)
        interior = np.all(
            (coords >= 0) & (coords <= np.array(pet.shape)[:, None, None] - 1), axis=0
        )
        assert interior.mean() > 0.5
        np.testing.assert_allclose(values[interior], _linear(xyz)[interior], atol=1e-3)


def test_zero_outside_the_pet_field(synthetic_pair):
    pet, ct = synthetic_pair
    shifted = replace(pet, affine=pet.affine.copy())
    shifted.affine[0, 3] += 250.0  # PET field now starts at x = -47.66 mm (minus half a voxel)
    values = resample_pet_to_ct_slice(shifted, ct, 10)
    x = ct.affine[0, 3] + 0.977 * np.arange(512)
    outside = x < -47.65625 - 4.6875 / 2 - 1e-6
    assert np.all(values[:, outside] == 0)
    assert np.all(values[:, ~outside] != 0)
    far = replace(pet, affine=pet.affine.copy())
    far.affine[2, 3] += 1000.0  # no overlap along z at all
    assert not resample_pet_to_ct_slice(far, ct, 0).any()


def test_real_whole_body_and_cropped_pet_agree_on_the_ct(shared_data: Path):
    """STS_001: the whole-body BQML PET (as SUV) and the scanner's SUV crop are the same data;
    resampled onto the cropped CT they must agree voxel for voxel inside the crop."""
    from petctiqa.dicom.index import index_dicom_tree
    from petctiqa.dicom.suv import load_pet_suv
    from petctiqa.dicom.volume import load_volume

    index = index_dicom_tree(shared_data / "dicom" / "STS_001")
    ct = load_volume(next(s for s in index.series if s.modality == "CT"))
    whole = load_pet_suv(next(s for s in index.series if s.modality == "PT" and s.rows == 128))
    crop = load_pet_suv(next(s for s in index.series if s.modality == "PT" and s.rows != 128))
    for ct_slice in (0, 29, 58):
        a = resample_pet_to_ct_slice(whole, ct, ct_slice)
        b = resample_pet_to_ct_slice(crop, ct, ct_slice)
        coords = ct_slice_to_pet_voxels(crop, ct, ct_slice)
        limit = np.array(crop.shape)[1:, None, None] - 1
        inside = np.all((coords[1:] >= 0) & (coords[1:] <= limit), axis=0)
        assert inside.sum() == 38592
        np.testing.assert_allclose(a[inside], b[inside], atol=1e-3)
    assert float(resample_pet_to_ct_slice(whole, ct, 58).max()) == pytest.approx(24.358, abs=0.01)
    image = render_slice(ct, whole, 29, load_dataset_protocol().render)
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    assert image.max() == 255


def _phantom_slice() -> tuple[np.ndarray, np.ndarray]:
    """256x256 CT slice: air, soft tissue disc (40 HU), bone (1000 HU), a couch (300 HU);
    PET: uptake only in the disc (1.0 SUV) and a red lesion (2.8 SUV) in an air pocket."""
    yy, xx = np.mgrid[0:256, 0:256]
    ct = np.full((256, 256), -1000.0, np.float32)
    pet = np.zeros((256, 256), np.float32)
    disc = (yy - 110) ** 2 + (xx - 128) ** 2 < 80**2
    ct[disc] = 40.0
    ct[(yy - 110) ** 2 + (xx - 128) ** 2 < 10**2] = 1000.0
    ct[220:224, 40:216] = 300.0  # couch
    pet[disc] = 1.0
    ct[100:110, 80:90] = -1000.0  # air pocket with a lesion: pure red PET
    pet[100:110, 80:90] = 0.4 * 7.0  # end of the black -> red segment of 'hot'
    return ct, pet


def test_fused_render_invariants_and_published_red_to_white_ratio():
    ct, pet = _phantom_slice()
    image = fuse_pet_on_ct(ct, pet, replace(DEFAULTS, size=256)).astype(int)
    assert image.shape == (256, 256, 3)
    assert image.max() == 255
    np.testing.assert_array_equal(image[5, 5], [0, 0, 0])  # air
    couch = image[221, 60]
    assert couch[0] == couch[1] == couch[2] > 0  # no uptake: pure grey
    no_pet = pet == 0
    assert np.all(
        (image[..., 0] == image[..., 1])[no_pet] & (image[..., 1] == image[..., 2])[no_pet]
    )
    red = image[105, 85]
    assert red[1] == red[2] == 0
    assert red[0] / couch[0] == pytest.approx(0.587, abs=0.004)  # published ratio


def test_ct_and_pet_only_modes():
    ct, pet = _phantom_slice()
    grey = fuse_pet_on_ct(ct, pet, replace(DEFAULTS, size=256, mode="ct")).astype(int)
    assert np.all(grey[..., 0] == grey[..., 1]) and np.all(grey[..., 1] == grey[..., 2])
    assert grey[221, 60, 0] == 255 and grey[110, 128 + 40, 0] == round(255 * 175 / 350)
    colour = fuse_pet_on_ct(ct, pet, replace(DEFAULTS, size=256, mode="pet")).astype(int)
    assert np.all(colour[221, 60] == 0)  # couch has no PET
    np.testing.assert_array_equal(colour[105, 85], [255, 0, 0])


def test_non_square_ct_is_padded_with_air_keeping_aspect():
    ct = np.full((100, 200), 40.0, np.float32)  # 1:2 soft-tissue block
    image = fuse_pet_on_ct(ct, np.zeros_like(ct), replace(DEFAULTS, size=128))
    rows_with_tissue = np.flatnonzero(image[..., 0].max(axis=1) > 0)
    assert image.shape == (128, 128, 3)
    assert rows_with_tissue.min() in (31, 32) and rows_with_tissue.max() in (95, 96)
    assert np.all(image[:30] == 0) and np.all(image[-30:] == 0)


def test_colormap_is_black_at_zero_and_matches_opencv_hot():
    import cv2

    levels = np.arange(256) / 255.0
    ours = np.rint(apply_colormap(levels, "hot") * 255).astype(int)
    opencv = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_HOT)[0, :, ::-1]
    # Same knots; OpenCV rounds its knees slightly (<= 5 levels within 3 entries of a knee).
    assert np.abs(ours - opencv.astype(int)).max() <= 5
    assert np.mean(np.abs(ours - opencv.astype(int)) <= 1) > 0.95
    assert np.all(apply_colormap(np.zeros(3), "hot_matplotlib") == 0)
    with pytest.raises(ProtocolError, match="render.colormap"):
        apply_colormap(levels, "jet")


def test_published_references_show_the_invariants(shared_data: Path):
    """The published level-(0,0,0) images: air exactly black, max 255 (up to JPEG), couch grey."""
    import pandas as pd
    from PIL import Image

    root = shared_data / "pet-ct-iqa-ds-dev"
    groups = pd.read_csv(root / "groups.csv")
    refs = groups[
        (groups.poisson_level == 0) & (groups.gaussian_level == 0) & (groups.jpeg_level == 0)
    ]
    assert len(refs) == 10
    for name in refs.image:
        image = np.asarray(Image.open(root / "test" / name).convert("RGB")).astype(int)
        assert np.all(image[:40] == 0)  # air above the patient
        assert image.max() >= 253
        grey = (image[..., 0] == image[..., 1]) & (image[..., 1] == image[..., 2])
        assert grey.mean() > 0.7


def test_bad_settings_and_units_are_reported(synthetic_pair):
    pet, ct = synthetic_pair
    with pytest.raises(PetctiqaError, match="render needs SUV"):
        render_slice(ct, replace(pet, unit="BQML"), 0, DEFAULTS)
    with pytest.raises(PetctiqaError, match="out of range"):
        resample_pet_to_ct_slice(pet, ct, 30)
    with pytest.raises(PetctiqaError, match="one shape"):
        fuse_pet_on_ct(np.zeros((4, 4)), np.zeros((4, 5)), DEFAULTS)


def test_separable_fast_path_equals_general_trilinear_resampling(synthetic_pair, shared_data):
    """Axis-aligned PET/CT pairs take the separable path; it must give the same float32 values
    as the general eight-tap map_coordinates path, on synthetic and on real DICOM."""
    from petctiqa.dicom.index import index_dicom_tree
    from petctiqa.dicom.suv import load_pet_suv
    from petctiqa.dicom.volume import load_volume
    from petctiqa.render import _axis_aligned, _resample_general

    pet, ct = synthetic_pair
    index = index_dicom_tree(shared_data / "dicom" / "STS_001")
    real_ct = load_volume(next(s for s in index.series if s.modality == "CT"))
    real_pet = load_pet_suv(next(s for s in index.series if s.modality == "PT" and s.rows == 128))
    for p, c, slices in ((pet, ct, (0, 13, 29)), (real_pet, real_ct, (0, 17, 58))):
        assert _axis_aligned(np.linalg.inv(p.affine) @ c.affine)
        for ct_slice in slices:
            fast = resample_pet_to_ct_slice(p, c, ct_slice)
            assert fast.any()
            np.testing.assert_allclose(fast, _resample_general(p, c, ct_slice), rtol=1e-6)


def test_oblique_pet_takes_the_general_path_and_stays_exact(synthetic_pair):
    from petctiqa.render import _axis_aligned

    pet, ct = synthetic_pair
    angle = np.deg2rad(10.0)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    tilted = replace(pet, affine=rotation @ pet.affine)
    k, j, i = np.indices(tilted.shape)
    xyz = tilted.voxel_to_patient(np.stack([i, j, k], axis=-1))
    tilted = replace(tilted, array=_linear(xyz).astype(np.float32))
    assert not _axis_aligned(np.linalg.inv(tilted.affine) @ ct.affine)
    values = resample_pet_to_ct_slice(tilted, ct, 13)
    coords = ct_slice_to_pet_voxels(tilted, ct, 13)
    interior = np.all((coords >= 0) & (coords <= np.array(tilted.shape)[:, None, None] - 1), axis=0)
    assert interior.mean() > 0.3
    jj, ii = np.mgrid[0:512, 0:512]
    expected = _linear(ct.voxel_to_patient(np.stack([ii, jj, np.full_like(ii, 13)], axis=-1)))
    np.testing.assert_allclose(values[interior], expected[interior], atol=1e-3)
