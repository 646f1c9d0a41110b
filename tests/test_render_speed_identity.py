"""The fast render and preprocessing paths give byte-identical results to the implementations
they replaced (kept here as references): dataset builds and scores must not change by one bit.

Every comparison is of raw bytes (float32 bit patterns, NaN payloads included), never allclose.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petctiqa.colormaps import _KNOTS, COLORMAP_NAMES, apply_colormap, colormap_planes
from petctiqa.dicom.index import index_dicom_tree
from petctiqa.dicom.records import SeriesInfo, Volume
from petctiqa.dicom.suv import load_pet_suv
from petctiqa.dicom.volume import load_volume
from petctiqa.iqa.preprocess import (
    INTERPOLATIONS,
    Preprocessing,
    _level_tables,
    image_to_array,
    rgb_to_array,
)
from petctiqa.iqa.presets import PRESETS
from petctiqa.protocol import RENDER_MODES, RenderSettings, load_dataset_protocol
from petctiqa.render import (
    AIR_HU,
    fuse_pet_on_ct,
    render_slice,
    resample_pet_to_ct_slice,
    square_and_resize,
    window_ct,
)

# ------------------------------------------------------------------ reference implementations
# Verbatim copies of the code before the speed-up (git b505f76), apart from names.


def ref_apply_colormap(values: np.ndarray, name: str) -> np.ndarray:
    knots = np.asarray(_KNOTS[name], dtype=np.float64)
    flat = np.clip(np.asarray(values, dtype=np.float32).reshape(-1), 0.0, 1.0)
    rgb = np.empty((flat.size, 3), dtype=np.float32)
    for channel in range(3):
        rgb[:, channel] = np.interp(flat, knots[:, 0], knots[:, channel + 1])
    return rgb.reshape(*np.shape(values), 3)


def ref_fuse_pet_on_ct(ct_hu: np.ndarray, pet_suv: np.ndarray, settings: RenderSettings):
    size = settings.size
    rgb = np.zeros((size, size, 3), dtype=np.float32)
    if settings.mode in ("fused", "ct"):
        ct_square = square_and_resize(ct_hu, size, AIR_HU)
        grey = window_ct(ct_square, settings.ct_window_width, settings.ct_window_level)
        weight = settings.ct_weight if settings.mode == "fused" else 1.0
        rgb += (np.float32(weight) * grey)[..., None]
    if settings.mode in ("fused", "pet"):
        pet_square = square_and_resize(np.nan_to_num(pet_suv), size, 0.0)
        weight = settings.pet_weight if settings.mode == "fused" else 1.0
        span = np.float32(settings.suv_max - settings.suv_min)
        scaled = (np.nan_to_num(pet_square) - np.float32(settings.suv_min)) / span
        rgb += np.float32(weight) * ref_apply_colormap(scaled, settings.colormap)
    peak = float(rgb.max())
    scale = 255.0 / peak if settings.normalize_max and peak > 0 else 255.0
    rgb *= np.float32(scale)
    np.clip(rgb, 0.0, 255.0, out=rgb)
    return np.rint(rgb).astype(np.uint8)


def _ref_linear_taps(coord: np.ndarray, n: int):
    inside = (coord >= -0.5) & (coord <= n - 0.5)
    clamped = np.clip(coord, 0.0, n - 1.0)
    lower = np.minimum(np.floor(clamped).astype(np.intp), n - 1)
    upper = np.minimum(lower + 1, n - 1)
    return lower, upper, clamped - lower, inside


def ref_resample_axis_aligned(pet: Volume, ct: Volume, ct_slice: int) -> np.ndarray:
    ct_to_pet = np.linalg.inv(pet.affine) @ ct.affine
    _, rows, cols = ct.shape
    n_k, n_j, n_i = pet.shape
    k = np.array([ct_to_pet[2, 2] * ct_slice + ct_to_pet[2, 3]])
    j = ct_to_pet[1, 1] * np.arange(rows) + ct_to_pet[1, 2] * ct_slice + ct_to_pet[1, 3]
    i = ct_to_pet[0, 0] * np.arange(cols) + ct_to_pet[0, 2] * ct_slice + ct_to_pet[0, 3]
    k0, k1, wk, k_inside = _ref_linear_taps(k, n_k)
    out = np.zeros((rows, cols), dtype=np.float32)
    if not k_inside[0]:
        return out
    j0, j1, wj, j_inside = _ref_linear_taps(j, n_j)
    i0, i1, wi, i_inside = _ref_linear_taps(i, n_i)
    plane = (1.0 - wk[0]) * pet.array[k0[0]].astype(np.float64) + wk[0] * pet.array[k1[0]]
    along_rows = (1.0 - wj)[:, None] * plane[j0] + wj[:, None] * plane[j1]
    values = along_rows[:, i0] * (1.0 - wi) + along_rows[:, i1] * wi
    inside = j_inside[:, None] & i_inside[None, :]
    out[inside] = values[inside]
    return out


def ref_normalised_chw(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    width, height = image.size
    if image.mode == "F":
        unit = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        chw = np.broadcast_to(unit, (3, height, width))
    else:
        chw = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.asarray(prep.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(prep.std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((chw - mean) / std, dtype=np.float32)


def ref_image_to_array(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    if prep.mode == "resize" and image.size != (prep.size, prep.size):
        image = image.resize((prep.size, prep.size), INTERPOLATIONS[prep.interpolation])
    return ref_normalised_chw(image, prep)


def ref_rgb_to_array(rgb: np.ndarray, prep: Preprocessing) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    return ref_image_to_array(image, prep)


# ------------------------------------------------------------------------------ helpers


def assert_same_bytes(new: np.ndarray, ref: np.ndarray) -> None:
    assert new.dtype == ref.dtype and new.shape == ref.shape
    assert new.flags.c_contiguous
    if not np.array_equal(new.view(np.uint8), ref.view(np.uint8)):
        differ = new.reshape(-1).view(np.uint32) != ref.reshape(-1).view(np.uint32)
        if new.dtype == np.uint8:
            differ = new.reshape(-1) != ref.reshape(-1)
        first = np.flatnonzero(differ)[:5]
        pytest.fail(
            f"{differ.sum()} elements differ, e.g. at {first}: "
            f"{new.reshape(-1)[first]} vs {ref.reshape(-1)[first]}"
        )


def colormap_inputs(name: str) -> list[np.ndarray]:
    """Knots and their float32 neighbours, 0, 1, out-of-range, NaNs with payloads, infinities,
    subnormals, float32 extremes, random values and random bit patterns."""
    rng = np.random.default_rng(7)
    knots = np.array([k[0] for k in _KNOTS[name]], dtype=np.float32)
    knots = np.concatenate([knots, np.float32([0.0, 1.0, 1e-9])])
    neighbours = np.concatenate(
        [np.nextafter(knots, np.float32(-np.inf)), knots, np.nextafter(knots, np.float32(np.inf))]
    )
    special = np.float32(
        [0.0, -0.0, 1.0, -1.0, 2.0, -0.5, 1.5, np.nan, -np.nan, np.inf, -np.inf, 1e-45, -1e-45,
         np.finfo(np.float32).tiny, np.finfo(np.float32).max, np.finfo(np.float32).min,
         np.finfo(np.float32).eps, 1.0 - np.finfo(np.float32).epsneg]
    )  # fmt: skip
    nan_payloads = np.array([0x7FC00000, 0xFFC00000, 0x7FC12345, 0xFFD54321], np.uint32)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    return [
        neighbours,
        special,
        nan_payloads.view(np.float32),
        bits.view(np.float32),
        rng.uniform(-0.2, 1.2, 300_001).astype(np.float32),  # not a multiple of the chunk
        rng.uniform(0.0, 1e-8, 50_000).astype(np.float32),  # around hot_matplotlib's 1e-9 knot
        np.linspace(0.0, 1.0, 7 * 2**16, dtype=np.float32).reshape(-1, 7, 4),
        np.float32(0.4),  # 0-d
        np.zeros((0, 5), np.float32),
        rng.uniform(-0.1, 1.1, (17, 23)).astype(np.float64),  # float64 input is cast first
    ]


# ------------------------------------------------------------------------------ colour map


def test_colormap_knots_keep_the_fast_path_exact():
    """colormap_planes relies on knots spanning exactly [0, 1] (clipped values never fall
    outside), strictly increasing positions and finite slopes, and no -0.0 knot value."""
    for name in COLORMAP_NAMES:
        knots = np.asarray(_KNOTS[name], dtype=np.float64)
        assert knots[0, 0] == 0.0 and knots[-1, 0] == 1.0
        assert np.all(np.diff(knots[:, 0]) > 0)
        slopes = np.diff(knots[:, 1:], axis=0) / np.diff(knots[:, 0])[:, None]
        assert np.all(np.isfinite(slopes))
        assert not np.any(np.signbit(knots[:, 1:]))


@pytest.mark.parametrize("name", COLORMAP_NAMES)
def test_colormap_is_np_interp_bit_for_bit(name):
    for values in colormap_inputs(name):
        with np.errstate(invalid="ignore"):  # signalling-NaN bit patterns warn when cast
            ref = ref_apply_colormap(values, name)
            assert_same_bytes(apply_colormap(values, name), ref)
            planes = colormap_planes(values, name)
        assert_same_bytes(np.ascontiguousarray(np.moveaxis(planes, 0, -1)), ref)


# ------------------------------------------------------------------------------ fusion


def _fusion_inputs() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    ct = rng.normal(0.0, 400.0, (96, 80)).astype(np.float32)
    pet = rng.gamma(1.0, 2.0, (96, 80)).astype(np.float32)
    pet[::7, ::5] = np.nan
    pet[3, :] = 7.0 * np.float32(0.4)  # exactly on the 'hot' knots
    pet[4, :] = 7.0 * np.float32(0.8)
    pet[5, :] = 7.0
    pet[6, :] = -1.0
    square = rng.uniform(-1100, 2000, (128, 128)).astype(np.float32)
    return [(ct, pet), (square, rng.uniform(0, 12, (128, 128)).astype(np.float32))]


def _settings_variants() -> list[RenderSettings]:
    base = load_dataset_protocol().render
    out = [base, RenderSettings(), replace(base, normalize_max=False)]
    out += [replace(base, mode=mode, size=64) for mode in RENDER_MODES]
    out += [replace(base, colormap=name, size=100) for name in COLORMAP_NAMES]
    out.append(replace(base, suv_min=0.5, suv_max=3.0, ct_weight=0.5, pet_weight=0.8, size=1))
    return out


def test_fuse_pet_on_ct_matches_the_interleaved_reference():
    for ct, pet in _fusion_inputs():
        for settings in _settings_variants():
            assert_same_bytes(
                fuse_pet_on_ct(ct, pet, settings), ref_fuse_pet_on_ct(ct, pet, settings)
            )
    zeros = np.zeros((40, 40), np.float32)
    ref = ref_fuse_pet_on_ct(zeros - 1000.0, zeros, RenderSettings(size=32))
    assert_same_bytes(fuse_pet_on_ct(zeros - 1000.0, zeros, RenderSettings(size=32)), ref)


# ------------------------------------------------------------------------------ resampling


def _volume(array: np.ndarray, spacing: float, step: float, origin, modality: str) -> Volume:
    affine = np.diag([spacing, spacing, step, 1.0])
    affine[:3, 3] = origin
    n, rows, cols = array.shape
    unit = "SUVbw" if modality == "PT" else "HU"
    series = SeriesInfo(
        patient_id="SYN", study_uid="1.2.3", series_uid=f"1.2.3.{modality}",
        frame_of_reference_uid="1.2.3.9", modality=modality, series_description="",
        study_description="", series_number=1, rows=rows, columns=cols,
        pixel_spacing=(spacing, spacing), slice_thickness=None, units=unit, files=(),
    )  # fmt: skip
    return Volume(
        array=array.astype(np.float32), affine=affine, unit=unit, series=series,
        sop_instance_uids=tuple(str(i) for i in range(n)),
    )  # fmt: skip


def test_axis_aligned_resampling_matches_the_reference():
    """Full overlap, PET covering part of the CT in-plane (the rectangle path), PET beyond the
    CT, no overlap at all."""
    rng = np.random.default_rng(5)
    pet_array = rng.gamma(1.0, 2.0, (30, 64, 48))
    ct = _volume(np.zeros((20, 200, 180)), 0.977, 2.5, (-90.0, -100.0, -20.0), "CT")
    for origin, spacing in (
        ((-150.0, -160.0, -40.0), 5.0),  # PET field larger than the CT's
        ((-40.0, -30.0, -30.0), 1.3),  # PET inside the CT field: a rectangle of it
        ((60.0, -300.0, -30.0), 2.0),  # overlapping a corner only
        ((500.0, 500.0, -30.0), 2.0),  # no in-plane overlap
        ((-150.0, -160.0, 900.0), 5.0),  # no overlap along z
    ):
        pet = _volume(pet_array, spacing, 3.27, origin, "PT")
        for ct_slice in (0, 7, 19):
            new = resample_pet_to_ct_slice(pet, ct, ct_slice)
            assert_same_bytes(new, ref_resample_axis_aligned(pet, ct, ct_slice))


# ------------------------------------------------------------------------------ preprocessing


def _preprocessings() -> list[Preprocessing]:
    used = {preset.preprocessing or Preprocessing() for preset in PRESETS.values()}
    return sorted(used, key=repr) + [
        Preprocessing(),
        Preprocessing(size=256, mode="crops", grid=0),
        Preprocessing(size=128, mode="crops", grid=3),
        Preprocessing(size=384, interpolation="bilinear"),
        Preprocessing(size=64, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        Preprocessing(size=512, mean=(0.1, 0.9, 0.33), std=(0.7, 1.3, 0.01), mode="crops"),
    ]


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    every_level = np.arange(256 * 3, dtype=np.uint8).reshape(16, 16, 3)
    every_level = np.concatenate([every_level, every_level[::-1]], axis=0)
    return [
        rng.integers(0, 256, (512, 512, 3), dtype=np.uint8),
        rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
        every_level,
    ]


@pytest.mark.parametrize("prep", _preprocessings(), ids=repr)
def test_normalisation_matches_the_float_reference(prep):
    for rgb in _images():
        assert_same_bytes(rgb_to_array(rgb, preprocessing=prep), ref_rgb_to_array(rgb, prep))
        image = Image.fromarray(rgb, "RGB")
        assert_same_bytes(
            image_to_array(image, preprocessing=prep), ref_image_to_array(image, prep)
        )
    strided = _images()[0][::2, ::-2]  # non-contiguous, as a caller may pass a flipped view
    assert_same_bytes(rgb_to_array(strided, preprocessing=prep), ref_rgb_to_array(strided, prep))
    wide = _images()[2].astype(np.int64)  # other dtypes are cast to uint8 first, as before
    assert_same_bytes(rgb_to_array(wide, preprocessing=prep), ref_rgb_to_array(wide, prep))
    unit = np.random.default_rng(2).uniform(-0.2, 1.2, (48, 64)).astype(np.float32)
    image = Image.fromarray(unit, mode="F")
    assert_same_bytes(image_to_array(image, preprocessing=prep), ref_image_to_array(image, prep))


def test_normalisation_tables_are_shared_read_only():
    tables = _level_tables((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert tables.shape == (3, 256) and tables.dtype == np.float32
    assert not tables.flags.writeable


# ------------------------------------------------------------------------------ real DICOM


def test_real_dicom_render_and_network_input_are_unchanged(shared_data: Path):
    """STS_001: whole-body PET on the cropped CT (the rectangle path) and the cropped PET, every
    render mode, through the scorer's rgb_to_array for the presets' preprocessing."""
    index = index_dicom_tree(shared_data / "dicom" / "STS_001")
    ct = load_volume(next(s for s in index.series if s.modality == "CT"))
    pets = [load_pet_suv(s) for s in index.series if s.modality == "PT"]
    base = load_dataset_protocol().render
    preps = [Preprocessing(), Preprocessing(size=256, mode="crops", grid=0)]
    for pet in pets:
        for ct_slice in (0, 29, 58):
            pet_on_ct = resample_pet_to_ct_slice(pet, ct, ct_slice)
            assert_same_bytes(pet_on_ct, ref_resample_axis_aligned(pet, ct, ct_slice))
            for settings in [base, *(replace(base, mode=m) for m in RENDER_MODES)]:
                rgb = render_slice(ct, pet, ct_slice, settings)
                ref = ref_fuse_pet_on_ct(ct.array[ct_slice], pet_on_ct, settings)
                assert_same_bytes(rgb, ref)
            for prep in preps:
                assert_same_bytes(
                    rgb_to_array(rgb, preprocessing=prep), ref_rgb_to_array(rgb, prep)
                )
