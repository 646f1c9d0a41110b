"""Baselines for ``petctiqa evaluate``: level table, BRISQUE, NIQE, PSNR and SSIM.

- Level table: predict each test image by the mean training MOS of its level cell (Poisson,
  Gaussian, JPEG for the published grid; a protocol's own axes otherwise), the overall training
  mean for a cell with no training image.
- Parameter regression (designs without levels, e.g. ``pet-ct-iqa-ds-continuous``): a quadratic
  ridge regression of MOS on the parameters the manifest records, fitted on the training images.
- BRISQUE (Mittal et al. 2012): the standard 36 features (MSCN coefficients and their four
  pairwise products, GGD/AGGD moment-matching fits, at full and half scale) on the 0..255
  luminance. The published BRISQUE model is a libsvm file trained on LIVE that we may not
  download, so an RBF SVR (scikit-learn, standardised features) is fitted on the *training split*
  of the data being evaluated; it predicts MOS directly.
- NIQE (Mittal et al. 2013): the same 18 features per scale on 96 x 96 patches; the pristine
  multivariate Gaussian is fitted on the sharpest patches (sharpness > 0.75 x the image's maximum)
  of the undistorted reference renders of the *training patients*. Higher NIQE = worse quality,
  so its correlations with MOS are negative.
- PSNR (RGB) and SSIM (luminance) against each image's reference render, where one exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from scipy.special import gamma as gamma_fn

from petctiqa.errors import DatasetError
from petctiqa.iqa.data import IqaSample
from petctiqa.iqa.preprocess import read_image

NIQE_PATCH = 96
NIQE_SHARPNESS = 0.75


# -------------------------------------------------------------------------------- features


def luminance(path: Path) -> np.ndarray:
    """float64 (H, W) luminance on 0..255 (ITU-R BT.601 weights; float TIFFs scaled by 255)."""
    image = read_image(path)
    if image.mode == "F":
        return np.asarray(image, dtype=np.float64) * 255.0
    rgb = np.asarray(image, dtype=np.float64)
    return rgb @ np.array([0.299, 0.587, 0.114])


def mscn(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(MSCN coefficients, local sigma map): 7x7 Gaussian window, sigma 7/6, C = 1."""
    mu = cv2.GaussianBlur(gray, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE)
    var = cv2.GaussianBlur(gray * gray, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE) - mu * mu
    sigma = np.sqrt(np.abs(var))
    return (gray - mu) / (sigma + 1.0), sigma


_GAMMA_GRID = np.arange(0.2, 10.0, 0.001)
# GGD: rho(g) = G(1/g) G(3/g) / G(2/g)^2 is decreasing in g; AGGD uses its reciprocal.
_GGD_RATIO = gamma_fn(1 / _GAMMA_GRID) * gamma_fn(3 / _GAMMA_GRID) / gamma_fn(2 / _GAMMA_GRID) ** 2


def _shape_from_ratio(rho: np.ndarray) -> np.ndarray:
    """Invert rho(g) on the grid (vectorised, by interpolation on the monotone table)."""
    return np.interp(rho, _GGD_RATIO[::-1], _GAMMA_GRID[::-1])


def ggd_features(x: np.ndarray) -> np.ndarray:
    """(shape, variance) of a zero-mean GGD fitted to the last axis of ``x``: (..., 2)."""
    second = np.mean(x * x, axis=-1)
    first = np.mean(np.abs(x), axis=-1)
    rho = second / np.maximum(first * first, 1e-12)
    return np.stack([_shape_from_ratio(rho), second], axis=-1)


def aggd_features(x: np.ndarray) -> np.ndarray:
    """(shape, mean, left variance, right variance) of an AGGD fit over the last axis: (..., 4)."""
    neg, pos = x < 0, x > 0
    left_var = np.sum(np.where(neg, x * x, 0.0), -1) / np.maximum(neg.sum(-1), 1)
    right_var = np.sum(np.where(pos, x * x, 0.0), -1) / np.maximum(pos.sum(-1), 1)
    left, right = np.sqrt(left_var), np.sqrt(right_var)
    g = left / np.maximum(right, 1e-12)
    r_hat = np.mean(np.abs(x), -1) ** 2 / np.maximum(np.mean(x * x, -1), 1e-12)
    big_r = r_hat * (g**3 + 1) * (g + 1) / np.maximum((g * g + 1) ** 2, 1e-12)
    alpha = _shape_from_ratio(1.0 / np.maximum(big_r, 1e-12))
    eta = (
        (right - left)
        * gamma_fn(2 / alpha)
        / gamma_fn(1 / alpha)
        * np.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    )
    return np.stack([alpha, eta, left_var, right_var], axis=-1)


def _pair_products(m: np.ndarray) -> list[np.ndarray]:
    """Horizontal, vertical, main- and anti-diagonal neighbour products (on the last 2 axes)."""
    return [
        m[..., :, :-1] * m[..., :, 1:],
        m[..., :-1, :] * m[..., 1:, :],
        m[..., :-1, :-1] * m[..., 1:, 1:],
        m[..., :-1, 1:] * m[..., 1:, :-1],
    ]


def scale_features(m: np.ndarray) -> np.ndarray:
    """18 features of MSCN maps ``m`` (..., H, W): GGD(2) + 4 x AGGD(4)."""
    lead = m.shape[:-2]
    parts = [ggd_features(m.reshape(*lead, -1))]
    parts += [aggd_features(p.reshape(*lead, -1)) for p in _pair_products(m)]
    return np.concatenate(parts, axis=-1)


def half_scale(gray: np.ndarray) -> np.ndarray:
    return cv2.resize(gray, (gray.shape[1] // 2, gray.shape[0] // 2), interpolation=cv2.INTER_CUBIC)


def brisque_features(gray: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of a 0..255 luminance image."""
    full = scale_features(mscn(gray)[0])
    half = scale_features(mscn(half_scale(gray))[0])
    return np.concatenate([full, half])


def _patches(array: np.ndarray, size: int) -> np.ndarray:
    rows, cols = array.shape[0] // size, array.shape[1] // size
    cut = array[: rows * size, : cols * size]
    return cut.reshape(rows, size, cols, size).transpose(0, 2, 1, 3).reshape(-1, size, size)


def niqe_patch_features(gray: np.ndarray, patch: int = NIQE_PATCH) -> tuple[np.ndarray, np.ndarray]:
    """(features (P, 36), sharpness (P,)) for the non-overlapping patches of an image."""
    m1, sigma = mscn(gray)
    m2, _ = mscn(half_scale(gray))
    f1 = scale_features(_patches(m1, patch))
    f2 = scale_features(_patches(m2, patch // 2))
    n = min(len(f1), len(f2))
    if n == 0:
        raise DatasetError(f"image {gray.shape} smaller than the NIQE patch ({patch} px)")
    return np.concatenate([f1[:n], f2[:n]], axis=1), _patches(sigma, patch).mean(axis=(1, 2))[:n]


@lru_cache(maxsize=4096)
def _cached_gray(path: Path) -> np.ndarray:
    return luminance(path)


# ------------------------------------------------------------------------------- baselines


def level_table_predict(train: Sequence[IqaSample], test: Sequence[IqaSample]) -> np.ndarray:
    """Mean training MOS of each test image's level cell (one level per distortion axis)."""
    if any(s.levels is None for s in (*train, *test)):
        raise DatasetError("level-table baseline needs distortion levels for every image")
    cells: dict[tuple[int, ...], list[float]] = {}
    for s in train:
        cells.setdefault(s.levels, []).append(s.mos)  # type: ignore[arg-type]
    overall = float(np.mean([s.mos for s in train]))
    return np.array(
        [float(np.mean(cells[s.levels])) if s.levels in cells else overall for s in test]
    )


def parameter_regression_predict(
    train: Sequence[IqaSample], test: Sequence[IqaSample]
) -> np.ndarray:
    """MOS from the recorded distortion parameters, for designs without levels (continuous):
    a quadratic ridge regression (parameters standardised, squares and products) fitted on the
    training images."""
    # lazy: scikit-learn is slow to import (docs/architecture.md); training imports this
    # module for the level table only
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    columns = [c for c, _ in train[0].parameters or ()]
    if not columns or any(
        s.parameters is None or [c for c, _ in s.parameters] != columns for s in (*train, *test)
    ):
        raise DatasetError("parameter regression needs the same recorded parameters per image")

    def features(samples: Sequence[IqaSample]) -> np.ndarray:
        return np.array([[v for _, v in s.parameters] for s in samples], dtype=np.float64)  # type: ignore[union-attr]

    model = make_pipeline(StandardScaler(), PolynomialFeatures(2), Ridge(alpha=1.0))
    model.fit(features(train), np.array([s.mos for s in train]))
    return model.predict(features(test))


@dataclass(frozen=True)
class BrisqueModel:
    scaler: object
    svr: object

    def predict(self, samples: Sequence[IqaSample]) -> np.ndarray:
        feats = np.stack([brisque_features(_cached_gray(s.image)) for s in samples])
        return self.svr.predict(self.scaler.transform(feats))


def fit_brisque(train: Sequence[IqaSample], c: float = 10.0, epsilon: float = 0.1) -> BrisqueModel:
    """Standardised BRISQUE features -> RBF SVR on MOS (scikit-learn)."""
    # lazy: as in parameter_regression_predict
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    feats = np.stack([brisque_features(_cached_gray(s.image)) for s in train])
    scaler = StandardScaler().fit(feats)
    svr = SVR(kernel="rbf", C=c, epsilon=epsilon, gamma="scale")
    svr.fit(scaler.transform(feats), np.array([s.mos for s in train]))
    return BrisqueModel(scaler, svr)


@dataclass(frozen=True)
class NiqeModel:
    mean: np.ndarray
    cov: np.ndarray

    def score_image(self, gray: np.ndarray) -> float:
        feats, _ = niqe_patch_features(gray)
        mu = feats.mean(axis=0)
        cov = np.cov(feats, rowvar=False) if len(feats) > 1 else np.zeros_like(self.cov)
        diff = self.mean - mu
        return float(np.sqrt(max(diff @ np.linalg.pinv((self.cov + cov) / 2) @ diff, 0.0)))

    def predict(self, samples: Sequence[IqaSample]) -> np.ndarray:
        return np.array([self.score_image(_cached_gray(s.image)) for s in samples])


def fit_niqe(references: Sequence[Path]) -> NiqeModel:
    """Pristine MVG from the sharpest patches of undistorted reference renders."""
    if not references:
        raise DatasetError("NIQE needs reference renders of the training patients; none found")
    selected = []
    for path in references:
        feats, sharp = niqe_patch_features(_cached_gray(Path(path)))
        selected.append(feats[sharp > NIQE_SHARPNESS * sharp.max()])
    feats = np.concatenate(selected)
    if len(feats) < 2:
        raise DatasetError("NIQE: fewer than 2 sharp reference patches")
    return NiqeModel(feats.mean(axis=0), np.cov(feats, rowvar=False))


def full_reference_scores(samples: Sequence[IqaSample]) -> tuple[np.ndarray, np.ndarray]:
    """(PSNR in dB on RGB, SSIM on luminance) of each image against its reference.

    An image identical to its reference gets PSNR = 100 dB (instead of infinity)."""
    # lazy: skimage.metrics is slow to import (docs/architecture.md); only these scores use it
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr, ssim = [], []
    for s in samples:
        if s.reference is None:
            raise DatasetError(f"{s.image}: no reference render for PSNR/SSIM")
        image = np.asarray(read_image(s.image), dtype=np.float64)
        ref = np.asarray(read_image(s.reference), dtype=np.float64)
        if image.shape != ref.shape:
            raise DatasetError(f"{s.image}: shape {image.shape} differs from reference {ref.shape}")
        mse = np.mean((image - ref) ** 2)
        psnr.append(100.0 if mse == 0 else peak_signal_noise_ratio(ref, image, data_range=255))
        ssim.append(
            structural_similarity(_cached_gray(s.reference), _cached_gray(s.image), data_range=255)
        )
    return np.array(psnr), np.array(ssim)
