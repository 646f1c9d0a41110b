"""Hand-made distortion features + gradient boosting: the baseline a learned model must beat
without knowing the true levels.

Nine numbers per image, computed at native resolution on the 0..255 RGB image (resizing erases
the distortions): the robust noise level (MAD of the Laplacian residual) in air and in the body,
the density of positive impulses against the 3x3 neighbourhood maximum at three thresholds
(normalised by the mean intensity, since the published impulse rate scales with it), and the
8x8 blockiness (mean step across block edges over the step inside blocks) of the luminance
horizontally and vertically, plus the mean intensity. A scikit-learn gradient-boosting
regressor maps them to MOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from petctiqa.iqa.data import IqaSample
from petctiqa.iqa.preprocess import read_image

FEATURE_NAMES = (
    "noise_air",
    "noise_body",
    "impulses_20",
    "impulses_40",
    "impulses_80",
    "blockiness_h",
    "blockiness_v",
    "mean_intensity",
    "body_fraction",
)
_AIR_LEVEL = 8


def _prominence(rgb: np.ndarray) -> np.ndarray:
    """Per channel: value minus the maximum of its 8 neighbours (positive at isolated peaks)."""
    ring = np.ones((3, 3), np.uint8)
    ring[1, 1] = 0
    out = np.empty(rgb.shape, dtype=np.int16)
    for c in range(3):
        out[..., c] = rgb[..., c].astype(np.int16) - cv2.dilate(rgb[..., c], ring)
    return out


def _mad(values: np.ndarray) -> float:
    if values.size == 0:
        return 0.0
    return float(np.median(np.abs(values - np.median(values))))


def _blockiness(gray: np.ndarray, axis: int) -> float:
    steps = np.abs(np.diff(gray, axis=axis))
    index = np.arange(steps.shape[axis])
    edge = (index % 8) == 7
    take = (lambda m: steps[:, m]) if axis == 1 else (lambda m: steps[m, :])
    inside = float(take(~edge).mean())
    return float(take(edge).mean()) / (inside + 1e-6)


def image_features(rgb: np.ndarray) -> np.ndarray:
    """The nine features of one uint8 (H, W, 3) image."""
    gray = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    residual = cv2.Laplacian(gray, cv2.CV_32F)
    air = gray < _AIR_LEVEL
    mean = float(rgb.mean()) + 1.0
    prom = _prominence(rgb)
    return np.array(
        [
            _mad(residual[air]),
            _mad(residual[~air]),
            *[float((prom > t).sum()) / mean for t in (20, 40, 80)],
            _blockiness(gray, 1),
            _blockiness(gray, 0),
            mean,
            float((~air).mean()),
        ]
    )


@lru_cache(maxsize=4096)
def _cached_features(path: Path) -> np.ndarray:
    image = read_image(path)
    rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
    return image_features(rgb)


@dataclass(frozen=True)
class HandcraftedModel:
    regressor: object

    def predict(self, samples: Sequence[IqaSample]) -> np.ndarray:
        feats = np.stack([_cached_features(s.image) for s in samples])
        return self.regressor.predict(feats)


def fit_handcrafted(train: Sequence[IqaSample], seed: int = 0) -> HandcraftedModel:
    """Gradient boosting (scikit-learn defaults, 300 trees of depth 3) on the nine features."""
    # lazy: scikit-learn is slow to import (docs/architecture.md); only fitting needs it
    from sklearn.ensemble import GradientBoostingRegressor

    feats = np.stack([_cached_features(s.image) for s in train])
    regressor = GradientBoostingRegressor(n_estimators=300, max_depth=3, random_state=seed)
    regressor.fit(feats, np.array([s.mos for s in train]))
    return HandcraftedModel(regressor)
