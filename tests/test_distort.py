"""Distortions: exact statistics with fixed seeds, encoder facts, and the published images."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import special, stats

from petctiqa.distort import (
    DistortionSpec,
    apply_gaussian_noise,
    apply_impulse_noise,
    apply_shot_noise,
    decode_image,
    distort_image,
    distortion_grid,
    encode_jpeg,
    impulse_probabilities,
    reference_distort_image,
)
from petctiqa.protocol import load_dataset_protocol
from petctiqa.seeding import rng_for

PUBLISHED = "pet-ct-iqa-ds-dev"


def _spec(p=0.0, sigma=0.0, q=100, form="impulse", levels=(0, 0, 0)) -> DistortionSpec:
    return DistortionSpec(*levels, form, p, sigma, q)


def _all_intensities(repeats: int) -> np.ndarray:
    """(256, repeats, 3) uint8 image where row I holds intensity I in every channel value."""
    return np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None], (256, repeats, 3)).copy()


def test_grid_from_shipped_protocols():
    grid = distortion_grid(load_dataset_protocol("pet-ct-iqa-ds").distortions)
    assert len(grid) == 27
    assert [s.code for s in grid[:4]] == ["p0g0j0", "p0g0j1", "p0g0j2", "p0g1j0"]
    assert grid[-1].code == "p2g2j2"
    cell = grid[1 * 9 + 0 * 3 + 2]
    assert (cell.poisson_form, cell.poisson_value, cell.gaussian_sigma, cell.jpeg_quality) == (
        "impulse",
        0.005,
        0.0,
        40,
    )
    assert grid[0].is_reference and not grid[1].is_reference
    shot = distortion_grid(load_dataset_protocol("pet-ct-iqa-ds-shot").distortions)
    assert {s.poisson_form for s in shot} == {"shot"}
    assert [s.poisson_value for s in shot[::9]] == [0.0, 1000.0, 250.0]


@pytest.mark.parametrize("lam", [0.01, 0.5])  # sparse thinning path and dense path
def test_impulse_rate_per_intensity_matches_1_minus_exp(lam):
    image = _all_intensities(4096 if lam < 0.1 else 256)
    out = apply_impulse_noise(image, lam, rng_for(11, f"impulse/{lam}"))
    assert out.dtype == np.uint8 and out.shape == image.shape
    changed = out != image
    assert np.all(out[changed] == 255)  # impulses are white channel values, nothing else
    n = image.shape[1] * 3
    hits = (out[:255] == 255).reshape(255, -1).sum(axis=1)  # I = 255 cannot change
    p = impulse_probabilities(lam)[:255]
    assert hits[0] == 0  # zero intensity never gets an impulse
    low, high = stats.binom.interval(0.9999, n, p[1:])
    assert np.all((hits[1:] >= low) & (hits[1:] <= high))
    # Overall: total count within 4 sigma of its expectation.
    expected = (p * n).sum()
    assert abs(hits.sum() - expected) < 4 * np.sqrt((n * p * (1 - p)).sum())


def test_impulse_leaves_input_untouched_and_is_deterministic():
    image = _all_intensities(64)
    before = image.copy()
    a = apply_impulse_noise(image, 0.01, rng_for(1, "x"))
    b = apply_impulse_noise(image, 0.01, rng_for(1, "x"))
    np.testing.assert_array_equal(image, before)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("peak", [1000.0, 250.0, 10.0])
def test_shot_noise_mean_and_variance_per_intensity(peak):
    image = _all_intensities(4096)
    out = apply_shot_noise(image, peak, rng_for(3, f"shot/{peak}")).astype(np.float64)
    values = out.reshape(256, -1)
    n = values.shape[1]
    # Exact moments of min(255, floor(255 k / peak + 0.5)), k ~ Poisson(I peak / 255).
    k = np.arange(0, int(peak * 1.6) + 60)
    mapped = np.minimum(255, np.floor(255 * k / peak + 0.5))
    pmf = stats.poisson.pmf(k[None, :], np.arange(256)[:, None] * peak / 255)
    mean = (pmf * mapped).sum(axis=1)
    var = (pmf * mapped**2).sum(axis=1) - mean**2
    assert np.all(values[0] == 0)
    z = (values.mean(axis=1)[1:] - mean[1:]) / np.sqrt(var[1:] / n)
    assert np.abs(z).max() < 4.5
    ratio = values.var(axis=1)[1:200] / var[1:200]
    assert np.abs(ratio - 1).max() < 0.12  # var estimate sd ~ sqrt(2/n) ~ 2 %
    # Physical meaning: mean I, variance 255 I / peak (+ rounding) away from the clip.
    middle = np.arange(60, 120)
    np.testing.assert_allclose(values.mean(axis=1)[middle], middle, atol=0.05 * 255 / np.sqrt(peak))
    np.testing.assert_allclose(
        values.var(axis=1)[middle], 255 * middle / peak + 1 / 12, rtol=0.1 if peak < 500 else 0.2
    )


def test_gaussian_integer_noise_matches_floor_of_normal():
    image = np.full((512, 512, 3), 128, np.uint8)
    out = apply_gaussian_noise(image, 10.0, rng_for(5, "g")).astype(int) - 128
    values, counts = np.unique(out, return_counts=True)
    pmf = special.ndtr((values + 1) / 10.0) - special.ndtr(values / 10.0)
    keep = pmf * out.size > 20
    chi2 = ((counts[keep] - pmf[keep] * out.size) ** 2 / (pmf[keep] * out.size)).sum()
    assert chi2 < stats.chi2.ppf(0.9999, keep.sum() - 1)
    assert out.mean() == pytest.approx(-0.5, abs=0.05)  # truncation bias of floor()
    assert out.std() == pytest.approx(np.sqrt(100 + 1 / 12), abs=0.05)


@pytest.mark.parametrize("sigma", [0.5, 5.0, 10.0, 40.0, 60.0])
def test_compiled_gaussian_kernel_gives_the_numpy_paths_bytes(sigma):
    """The numba kernel consumes the same draws in the same order: identical noisy images,
    including the clipped ends, the crossed cells and read-only inputs."""
    from petctiqa.distortions import gaussian

    kernel = gaussian.compiled_kernel()
    if kernel is None:
        pytest.skip("numba not installed or disabled: only the NumPy path exists")
    image = np.random.default_rng(7).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    image[:20] = 0
    image[-20:] = 255
    image.flags.writeable = False
    table = gaussian.gaussian_step_table(sigma)
    flat = image.reshape(-1)
    numpy_path = gaussian.gaussian_noise_numpy(flat, table, rng_for(3, "k"))
    if table.coarse.dtype == np.int8:
        compiled = gaussian.gaussian_noise_compiled(flat, table, rng_for(3, "k"), kernel)
        assert np.array_equal(compiled, numpy_path)
    public = apply_gaussian_noise(image, sigma, rng_for(3, "k"))
    assert np.array_equal(public.reshape(-1), numpy_path)


def test_numba_can_be_switched_off(monkeypatch):
    import importlib

    import petctiqa.noise_kernel as noise_kernel

    monkeypatch.setenv(noise_kernel.DISABLE_ENV, "1")
    try:
        assert importlib.reload(noise_kernel).compiled_add_table_steps is None
    finally:
        monkeypatch.delenv(noise_kernel.DISABLE_ENV)
        importlib.reload(noise_kernel)


def test_gaussian_clips_then_truncates():
    black = np.zeros((256, 256, 3), np.uint8)
    white = np.full((256, 256, 3), 255, np.uint8)
    low = apply_gaussian_noise(black, 5.0, rng_for(2, "b")).astype(float)
    high = apply_gaussian_noise(white, 5.0, rng_for(2, "w")).astype(float)
    # P(out = 0 | I = 0) = P(5 z < 1) = Phi(0.2); P(out = 255 | I = 255) = P(z >= 0) = 0.5.
    assert (low == 0).mean() == pytest.approx(special.ndtr(0.2), abs=0.005)
    assert (high == 255).mean() == pytest.approx(0.5, abs=0.005)


@pytest.mark.parametrize(
    ("sigma", "mean", "std", "zeros"), [(5.0, 1.83, 1.95, 0.32), (10.0, 3.86, 3.88, 0.23)]
)
def test_gaussian_on_black_air_then_q100_matches_published(sigma, mean, std, zeros):
    air = np.zeros((512, 512, 3), np.uint8)
    data = distort_image(air, _spec(sigma=sigma, levels=(0, 1, 0)), rng_for(7, f"air/{sigma}"))
    pixels = decode_image(data).astype(np.float64)
    assert pixels.mean() == pytest.approx(mean, abs=0.03)
    assert pixels.std() == pytest.approx(std, abs=0.03)
    assert (pixels == 0).mean() == pytest.approx(zeros, abs=0.01)


@pytest.mark.parametrize(("quality", "dc"), [(100, 1), (70, 10), (40, 20)])
def test_jpeg_quality_luma_dc_quant_entry(quality, dc):
    image = np.full((64, 64, 3), 90, np.uint8)
    data = distort_image(image, _spec(q=quality), rng_for(0, "q"))
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "JPEG"
    assert decoded.quantization[0][0] == dc
    assert decoded.layer[0][1:3] == (2, 2)  # 4:2:0: luma sampled 2x2 relative to chroma


@pytest.fixture(scope="module")
def published(shared_data):
    root = shared_data / PUBLISHED
    groups = pd.read_csv(root / "groups.csv")

    def load(slice_id: str, p: int, g: int, j: int) -> np.ndarray:
        row = groups[
            (groups.slice == slice_id)
            & (groups.poisson_level == p)
            & (groups.gaussian_level == g)
            & (groups.jpeg_level == j)
        ]
        return np.asarray(Image.open(root / "test" / row.image.iloc[0]).convert("RGB"))

    return load


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_encoder_is_byte_identical_to_pil(published, subsampling):
    image = published("s01", 0, 1, 0)
    for quality in (100, 70, 40):
        buffer = io.BytesIO()
        pil_sub = {"4:2:0": 2, "4:4:4": 0}[subsampling]
        Image.fromarray(image).save(buffer, "JPEG", quality=quality, subsampling=pil_sub)
        assert encode_jpeg(image, quality, subsampling) == buffer.getvalue()


def test_reference_implementation_agrees_without_noise_and_in_distribution(published):
    image = published("s03", 0, 0, 0)
    clean = _spec(q=70, levels=(0, 0, 1))
    assert distort_image(image, clean, rng_for(0, "a")) == reference_distort_image(
        image, clean, rng_for(0, "b")
    )
    noisy = _spec(p=0.01, sigma=5.0, q=100, levels=(2, 1, 0))
    fast = decode_image(distort_image(image, noisy, rng_for(0, "c"))).astype(float)
    slow = decode_image(reference_distort_image(image, noisy, rng_for(0, "d"))).astype(float)
    assert fast.mean() == pytest.approx(slow.mean(), abs=0.05)
    assert fast.std() == pytest.approx(slow.std(), abs=0.05)


def test_png_option_is_lossless_copy_of_the_jpeg_pixels(published):
    image = published("s02", 0, 0, 0)
    spec = _spec(p=0.005, sigma=5.0, q=40, levels=(1, 1, 2))
    jpeg = distort_image(image, spec, rng_for(9, "k"))
    png = distort_image(image, spec, rng_for(9, "k"), image_format="png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(decode_image(png), decode_image(jpeg))
    pil_decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    np.testing.assert_array_equal(decode_image(jpeg), pil_decoded)


def test_seeded_streams_are_reproducible_and_independent():
    image = _all_intensities(128)
    spec = _spec(p=0.01, sigma=10.0, q=70, levels=(2, 2, 1))
    first = distort_image(image, spec, rng_for(42, "P1/s1/p2g2j1"))
    assert first == distort_image(image, spec, rng_for(42, "P1/s1/p2g2j1"))
    assert first != distort_image(image, spec, rng_for(42, "P1/s2/p2g2j1"))


@pytest.mark.parametrize(("slice_id", "level"), [("s01", 1), ("s01", 2), ("s06", 2)])
def test_impulse_counts_match_published_images(published, slice_id, level):
    """Luma jumps > 20 against the reference: published image vs the model on the same slice."""
    reference = published(slice_id, 0, 0, 0)
    luma = np.array([0.299, 0.587, 0.114])
    base = reference @ luma

    def jumps(pixels: np.ndarray) -> int:
        return int((np.abs(pixels @ luma - base) > 20).sum())

    spec = _spec(p=[0.0, 0.005, 0.01][level], levels=(level, 0, 0))
    simulated = [
        jumps(decode_image(distort_image(reference, spec, rng_for(s, slice_id)))) for s in range(4)
    ]
    observed = jumps(published(slice_id, level, 0, 0))
    model = np.mean(simulated)
    # Counts are ~Poisson: within 4 sigma of the model mean (200-550 impulse pixels).
    assert abs(observed - model) < 4 * np.sqrt(model) + 10, (observed, simulated)


@pytest.mark.parametrize("level", [1, 2])
def test_air_statistics_match_published_gaussian_image(published, level):
    reference = published("s06", 0, 0, 0)
    spec = _spec(sigma=[0.0, 5.0, 10.0][level], levels=(0, level, 0))
    simulated = decode_image(distort_image(reference, spec, rng_for(1, "air"))).astype(float)
    observed = published("s06", 0, level, 0).astype(float)
    for region in (observed[:100], simulated[:100]):  # top rows: air only
        assert region.mean() == pytest.approx([1.83, 3.86][level - 1], abs=0.05)
    assert observed[:100].std() == pytest.approx(simulated[:100].std(), abs=0.05)
    assert (observed[:100] == 0).mean() == pytest.approx((simulated[:100] == 0).mean(), abs=0.01)


def test_bad_input_is_rejected_with_a_clear_message():
    from petctiqa.errors import PetctiqaError

    with pytest.raises(PetctiqaError, match="8-bit RGB"):
        distort_image(np.zeros((8, 8), np.uint8), _spec(), rng_for(0, "x"))
    with pytest.raises(PetctiqaError, match="image format"):
        distort_image(np.zeros((8, 8, 3), np.uint8), _spec(), rng_for(0, "x"), image_format="gif")
    with pytest.raises(PetctiqaError, match="poisson form"):
        distort_image(np.zeros((8, 8, 3), np.uint8), _spec(p=1, form="dense"), rng_for(0, "x"))
