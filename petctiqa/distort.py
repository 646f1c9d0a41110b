"""The three PET-CT-IQA-DS distortions on the fused image: Poisson -> Gaussian -> JPEG.

The stages themselves are plug-ins in :mod:`petctiqa.distortions` (``impulse_poisson``,
``shot_poisson``, ``gaussian``, ``jpeg``); this module keeps the grid of level combinations
(:class:`DistortionSpec`, :func:`distortion_grid`) and the public functions the dataset build,
the trainer and the tests call, delegating to the plug-ins (same draws in the same order, so
the same bytes as before the plug-ins existed). Everything works on a fused 8-bit RGB image
(``uint8``, shape ``(rows, cols, 3)``), channel by channel, on the 0..255 scale:

1. **Poisson stage**, two forms (``DistortionSpec.poisson_form``): ``"impulse"`` (the published
   form, :mod:`petctiqa.distortions.impulse`; ``poisson_value`` = lambda) or ``"shot"`` (dense
   photon-counting noise, :mod:`petctiqa.distortions.shot`; ``poisson_value`` = peak).
2. **Gaussian** (:mod:`petctiqa.distortions.gaussian`): ``clip(x + N(0, sigma), 0, 255)`` per
   channel, truncated to uint8.
3. **JPEG** (:mod:`petctiqa.distortions.jpeg`) at ``jpeg_quality``, libjpeg's standard tables,
   baseline, 4:2:0 by default; it also makes the image file.

:func:`reference_distort_image` is the straightforward NumPy/PIL implementation of the same
distortions, kept only as the slow baseline for benchmarks and cross-checks.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from petctiqa.distortions import gaussian, impulse, shot
from petctiqa.distortions.design import ImageCell, continuous_cells, grid_cells
from petctiqa.distortions.gaussian import apply_gaussian_noise
from petctiqa.distortions.impulse import apply_impulse_noise, impulse_probabilities
from petctiqa.distortions.jpeg import (
    check_image_format,
    check_subsampling,
    decode_image,
    encode_file,
    encode_jpeg,
)
from petctiqa.distortions.registry import get_distortion
from petctiqa.distortions.sampling import check_rgb
from petctiqa.distortions.shot import apply_shot_noise
from petctiqa.errors import PetctiqaError
from petctiqa.protocol import POISSON_FORMS, DistortionSettings

__all__ = [
    "DistortionSpec",
    "apply_gaussian_noise",
    "apply_impulse_noise",
    "apply_noise",
    "apply_shot_noise",
    "decode_image",
    "distort_image",
    "distortion_grid",
    "encode_jpeg",
    "impulse_probabilities",
    "reference_distort_image",
    "slice_specs",
]

_PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
POISSON_PLUGINS = {"impulse": impulse.NAME, "shot": shot.NAME}
"""Protocol ``poisson_form`` -> the plug-in that implements it."""
GAUSSIAN_PLUGIN = gaussian.NAME


# ----------------------------------------------------------------------------- specification


@dataclass(frozen=True)
class DistortionSpec:
    """One cell of the distortion grid: the level indices and the parameter values they stand for.

    ``poisson_value`` is lambda for the impulse form and the photon peak for the shot form;
    0 means no Poisson stage. ``gaussian_sigma`` is on the 0..255 scale (0 = none).
    """

    poisson_level: int
    gaussian_level: int
    jpeg_level: int
    poisson_form: str
    poisson_value: float
    gaussian_sigma: float
    jpeg_quality: int

    @property
    def code(self) -> str:
        """Short level code used in image names, e.g. ``"p1g0j2"``."""
        return f"p{self.poisson_level}g{self.gaussian_level}j{self.jpeg_level}"

    volume_key = ""
    """The classic grid starts every image from the slice's reference render."""

    def encode(
        self, image: np.ndarray, rng: np.random.Generator, image_format: str, subsampling: str
    ) -> bytes:
        """The image file of this cell (:func:`distort_image`)."""
        return distort_image(image, self, rng, image_format, subsampling)

    @property
    def is_reference(self) -> bool:
        """True for the undistorted cell (no noise; only the JPEG at the level-0 quality)."""
        return self.poisson_value == 0 and self.gaussian_sigma == 0 and self.jpeg_level == 0


def distortion_grid(settings: DistortionSettings) -> list[DistortionSpec]:
    """All level combinations (27 for 3 levels each), ordered by poisson, gaussian, jpeg level.

    Only the classic grid (Poisson, Gaussian, JPEG, 3 levels each) is a grid of
    :class:`DistortionSpec`; other ``[[distortions.axes]]`` are refused with a clear error
    (their images are :func:`slice_specs`).
    """
    if settings.axes is not None:
        shown = ", ".join(f"{a.distortion} ({len(a.levels)} levels)" for a in settings.axes)
        raise PetctiqaError(
            f"this protocol's distortion axes ({shown}) are not the classic Poisson x Gaussian x "
            "JPEG grid of 3 levels each; their images are petctiqa.distort.slice_specs"
        )
    return [
        DistortionSpec(
            poisson_level=p,
            gaussian_level=g,
            jpeg_level=j,
            poisson_form=settings.poisson_form,
            poisson_value=float(settings.poisson_levels[p]),
            gaussian_sigma=float(settings.gaussian_sigmas[g]),
            jpeg_quality=int(settings.jpeg_qualities[j]),
        )
        for p in range(len(settings.poisson_levels))
        for g in range(len(settings.gaussian_sigmas))
        for j in range(len(settings.jpeg_qualities))
    ]


def slice_specs(
    settings: DistortionSettings, seed: int, slice_id: str
) -> tuple[DistortionSpec, ...] | tuple[ImageCell, ...]:
    """The images of one slice: the classic grid's :class:`DistortionSpec` (the same for every
    slice), or the :class:`~petctiqa.distortions.design.ImageCell` of an axes protocol (a
    continuous design draws them per slice)."""
    if settings.axes is None:
        return tuple(distortion_grid(settings))
    if settings.images_per_slice is not None:
        return continuous_cells(settings.axes, settings.images_per_slice, seed, slice_id)
    return grid_cells(settings.axes)


def _check_spec(spec: DistortionSpec) -> None:
    if spec.poisson_form not in POISSON_FORMS:
        raise PetctiqaError(
            f"poisson form must be one of {', '.join(POISSON_FORMS)}, got {spec.poisson_form!r}"
        )
    if not spec.poisson_value >= 0 or not spec.gaussian_sigma >= 0:
        raise PetctiqaError(f"noise parameters must be >= 0, got {spec}")
    if not 1 <= spec.jpeg_quality <= 100:
        raise PetctiqaError(f"jpeg quality must be 1..100, got {spec.jpeg_quality}")


# ----------------------------------------------------------------------------- stages


def apply_noise(image: np.ndarray, spec: DistortionSpec, rng: np.random.Generator) -> np.ndarray:
    """Poisson stage then Gaussian stage (no JPEG). Returns ``image`` itself if both are off."""
    check_rgb(image)
    _check_spec(spec)
    out = image
    if spec.poisson_value > 0:
        out = get_distortion(POISSON_PLUGINS[spec.poisson_form]).apply(out, spec.poisson_value, rng)
    if spec.gaussian_sigma > 0:
        out = get_distortion(GAUSSIAN_PLUGIN).apply(out, spec.gaussian_sigma, rng)
    return out


# ----------------------------------------------------------------------------- file


def distort_image(
    image: np.ndarray,
    spec: DistortionSpec,
    rng: np.random.Generator,
    image_format: str = "jpeg",
    subsampling: str = "4:2:0",
) -> bytes:
    """Poisson -> Gaussian -> JPEG on a fused uint8 RGB image; returns the encoded file.

    ``image_format="jpeg"``: the JPEG at ``spec.jpeg_quality`` (as published).
    ``"png"``: a lossless PNG of the decoded JPEG pixels (same pixels, no second loss).
    All randomness comes from ``rng`` (use ``petctiqa.seeding.rng_for(seed, image_key)``).
    """
    noisy = apply_noise(image, spec, rng)
    return encode_file(noisy, spec.jpeg_quality, image_format, subsampling)


# ----------------------------------------------------------------------------- slow reference


def reference_distort_image(
    image: np.ndarray,
    spec: DistortionSpec,
    rng: np.random.Generator,
    image_format: str = "jpeg",
    subsampling: str = "4:2:0",
) -> bytes:
    """SLOW straightforward reference of :func:`distort_image`, for benchmarks and cross-checks.

    Same semantics (same distributions, same encoder settings), but drawn the obvious way:
    ``rng.poisson`` for every channel value, a float64 ``rng.normal`` for every channel value and
    PIL for JPEG/PNG. It does not produce the same random stream as :func:`distort_image`, so
    outputs match in distribution, not byte for byte (they are identical when no noise is on).
    """
    check_rgb(image)
    _check_spec(spec)
    pixels = image
    if spec.poisson_value > 0:
        if spec.poisson_form == "impulse":
            counts = rng.poisson(spec.poisson_value * pixels.astype(np.float64) / 255.0)
            pixels = np.where(counts > 0, 255, pixels).astype(np.uint8)
        else:
            counts = rng.poisson(pixels.astype(np.float64) / 255.0 * spec.poisson_value)
            scaled = np.floor(255.0 * counts / spec.poisson_value + 0.5)
            pixels = np.minimum(scaled, 255).astype(np.uint8)
    if spec.gaussian_sigma > 0:
        noisy = pixels.astype(np.float64) + rng.normal(0.0, spec.gaussian_sigma, pixels.shape)
        pixels = np.clip(noisy, 0, 255).astype(np.uint8)
    check_subsampling(subsampling)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(
        buffer, "JPEG", quality=spec.jpeg_quality, subsampling=_PIL_SUBSAMPLING[subsampling]
    )
    if image_format == "jpeg":
        return buffer.getvalue()
    check_image_format(image_format)
    decoded = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    png = io.BytesIO()
    decoded.save(png, "PNG")
    return png.getvalue()
