"""The distortion generator as a teacher: labelled training samples from clean references.

Each sample re-applies the protocol's own distortion functions (:mod:`petctiqa.distort`) to a
clean reference crop, with parameters drawn from continuous ranges that cover the protocol's
levels (``margin`` beyond the strongest level), and is labelled with those parameters. Every
draw of sample ``i`` comes from ``rng_for(seed, "pretrain/sample/<i>")``, so a sample depends
only on (seed, i, the references): pretraining is reproducible and resumable.

Crops are cut *before* distorting: the noises are per pixel and JPEG is block-local, so a
16-aligned crop distorted on its own has the distribution of the same region cut from a
distorted whole image, at a quarter of the cost for 256-px crops of 512-px images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petctiqa.distort import (
    apply_gaussian_noise,
    apply_impulse_noise,
    apply_shot_noise,
    decode_image,
    encode_jpeg,
)
from petctiqa.errors import ModelError
from petctiqa.iqa.preprocess import crop_side, random_origin
from petctiqa.protocol import DistortionSettings
from petctiqa.seeding import rng_for

TARGET_NAMES = ("poisson", "gaussian", "jpeg")


@dataclass(frozen=True)
class DistortionDraw:
    poisson: float
    """lambda (impulse form) or photon peak (shot form); 0 = none."""
    gaussian_sigma: float
    jpeg_quality: int


@dataclass(frozen=True)
class DistortionRanges:
    """Continuous parameter ranges derived from a protocol's three axes."""

    poisson_form: str
    poisson_strongest: float
    """Impulse: the largest lambda. Shot: the smallest non-zero peak (most noise)."""
    poisson_weakest: float
    """Shot: the largest peak (least noise); impulse: unused (0)."""
    gaussian_max: float
    jpeg_best: int
    jpeg_worst: int
    subsampling: str
    margin: float = 1.25
    none_probability: float = 0.25
    """Probability that an axis is at its level-0 value (no noise, best quality)."""

    @classmethod
    def from_settings(cls, settings: DistortionSettings, margin: float = 1.25) -> DistortionRanges:
        levels = [float(v) for v in settings.poisson_levels if v > 0]
        if not levels or not any(s > 0 for s in settings.gaussian_sigmas):
            raise ModelError("pretraining needs a protocol with non-zero noise levels")
        impulse = settings.poisson_form == "impulse"
        return cls(
            poisson_form=settings.poisson_form,
            poisson_strongest=max(levels) if impulse else min(levels),
            poisson_weakest=0.0 if impulse else max(levels),
            gaussian_max=float(max(settings.gaussian_sigmas)),
            jpeg_best=int(settings.jpeg_qualities[0]),
            jpeg_worst=int(min(settings.jpeg_qualities)),
            subsampling=settings.jpeg_subsampling,
            margin=margin,
        )

    def draw(self, rng: np.random.Generator) -> DistortionDraw:
        none = rng.random(3) < self.none_probability
        u = rng.random(3)
        if none[0]:
            poisson = 0.0
        elif self.poisson_form == "impulse":
            poisson = float(u[0] * self.poisson_strongest * self.margin)
        else:
            # Shot noise strength goes as 1 / sqrt(peak): draw peaks log-uniformly.
            low = np.log(self.poisson_strongest / self.margin)
            high = np.log(self.poisson_weakest * self.margin)
            poisson = float(np.exp(low + u[0] * (high - low)))
        sigma = 0.0 if none[1] else float(u[1] * self.gaussian_max * self.margin)
        worst = max(1, round(self.jpeg_best - (self.jpeg_best - self.jpeg_worst) * self.margin))
        quality = self.jpeg_best if none[2] else int(round(worst + u[2] * (self.jpeg_best - worst)))
        return DistortionDraw(poisson, sigma, quality)

    def targets(self, draw: DistortionDraw) -> np.ndarray:
        """Strength of each axis scaled so the protocol's strongest level is 1 (0 = none)."""
        if draw.poisson == 0:
            poisson = 0.0
        elif self.poisson_form == "impulse":
            poisson = draw.poisson / self.poisson_strongest
        else:
            poisson = float(np.sqrt(self.poisson_strongest / draw.poisson))
        return np.array(
            [
                poisson,
                draw.gaussian_sigma / self.gaussian_max,
                (self.jpeg_best - draw.jpeg_quality) / (self.jpeg_best - self.jpeg_worst),
            ],
            dtype=np.float32,
        )


def apply_draw(
    image: np.ndarray, draw: DistortionDraw, ranges: DistortionRanges, rng: np.random.Generator
) -> np.ndarray:
    """The protocol's pipeline (Poisson stage -> Gaussian -> JPEG) on a uint8 RGB image."""
    noisy = image
    if draw.poisson > 0:
        if ranges.poisson_form == "impulse":
            noisy = apply_impulse_noise(noisy, draw.poisson, rng)
        else:
            noisy = apply_shot_noise(noisy, draw.poisson, rng)
    if draw.gaussian_sigma > 0:
        noisy = apply_gaussian_noise(noisy, draw.gaussian_sigma, rng)
    return decode_image(encode_jpeg(noisy, draw.jpeg_quality, ranges.subsampling))


def aligned_crop(image: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A ``side`` x ``side`` crop of an (H, W, 3) image at a random 16-aligned origin."""
    height, width = image.shape[:2]
    side = crop_side(height, width, side)
    row, col = random_origin(height, width, side, rng)
    return image[row : row + side, col : col + side]


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 rotations/flips of an (H, W, 3) image (k in 0..7). The distortions are
    isotropic and 512 is a multiple of 8, so a turned reference keeps its JPEG block grid
    aligned and is as valid a clean slice as the original: 8x the content variety from the
    handful of references a training patient has."""
    turned = np.rot90(image, k % 4)
    return np.ascontiguousarray(turned[:, ::-1] if k >= 4 else turned)


@dataclass(frozen=True)
class SampleSettings:
    """How generator samples are cut from the references."""

    crop: int
    augment: bool = False
    """Apply a random :func:`dihedral` transform to the reference before cropping."""


def _clean_patch(
    references: list[np.ndarray], settings: SampleSettings, rng: np.random.Generator
) -> np.ndarray:
    reference = references[int(rng.integers(len(references)))]
    if settings.augment:
        reference = dihedral(reference, int(rng.integers(8)))
    return aligned_crop(reference, settings.crop, rng)


def generator_sample(
    references: list[np.ndarray],
    ranges: DistortionRanges,
    settings: SampleSettings,
    seed: int,
    index: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``index``: (distorted uint8 RGB crop, target vector), a pure function of its inputs."""
    rng = rng_for(seed, f"pretrain/sample/{index}")
    if not settings.augment:
        # The draw order of the unaugmented generator (reference, draw, crop) is kept so that
        # earlier pretraining runs reproduce bit for bit.
        reference = references[int(rng.integers(len(references)))]
        draw = ranges.draw(rng)
        patch = aligned_crop(reference, settings.crop, rng)
        return apply_draw(patch, draw, ranges, rng), ranges.targets(draw)
    patch = _clean_patch(references, settings, rng)
    draw = ranges.draw(rng)
    return apply_draw(patch, draw, ranges, rng), ranges.targets(draw)


def generator_pair(
    references: list[np.ndarray],
    ranges: DistortionRanges,
    settings: SampleSettings,
    seed: int,
    index: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pair ``index``: two independent distortions of the same clean crop, with their targets
    (for the ranking target: which of the two is the more distorted on each axis)."""
    rng = rng_for(seed, f"pretrain/pair/{index}")
    patch = _clean_patch(references, settings, rng)
    first, second = ranges.draw(rng), ranges.draw(rng)
    return (
        apply_draw(patch, first, ranges, rng),
        ranges.targets(first),
        apply_draw(patch, second, ranges, rng),
        ranges.targets(second),
    )
