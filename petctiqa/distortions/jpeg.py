"""JPEG compression: the last stage, which also makes the image file.

libjpeg's standard tables, baseline, the requested chroma subsampling (4:2:0 by default).
OpenCV's and Pillow's encoders give byte-identical files (both libjpeg-turbo; checked in the
tests); OpenCV is used because it is faster. ``image_format="png"`` stores the JPEG-degraded
pixels losslessly (same pixels, no second loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from petctiqa.distortions.registry import Distortion, Parameter, register_distortion
from petctiqa.distortions.sampling import check_rgb
from petctiqa.errors import PetctiqaError
from petctiqa.png import encode_png_rgb
from petctiqa.protocol import CHROMA_SUBSAMPLINGS, IMAGE_FORMATS

NAME = "jpeg"
_CV_SUBSAMPLING = {
    "4:4:4": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    "4:2:2": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "4:2:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
}


def check_subsampling(subsampling: str) -> None:
    if subsampling not in CHROMA_SUBSAMPLINGS:
        raise PetctiqaError(
            f"subsampling must be one of {', '.join(CHROMA_SUBSAMPLINGS)}, got {subsampling!r}"
        )


def check_image_format(image_format: str) -> None:
    if image_format not in IMAGE_FORMATS:
        raise PetctiqaError(
            f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}"
        )


def encode_jpeg(image: np.ndarray, quality: int, subsampling: str = "4:2:0") -> bytes:
    """Baseline JPEG with libjpeg's standard tables (byte-identical to PIL's ``save``)."""
    check_rgb(image)
    check_subsampling(subsampling)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        int(quality),
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        _CV_SUBSAMPLING[subsampling],
    ]
    ok, buffer = cv2.imencode(".jpg", bgr, params)
    if not ok:  # pragma: no cover - OpenCV only fails on invalid input, checked above
        raise PetctiqaError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buffer.tobytes()


def decode_image(data: bytes) -> np.ndarray:
    """Decode JPEG or PNG bytes to an RGB uint8 array (same pixels as PIL's decoder)."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise PetctiqaError("cannot decode image bytes (not a JPEG or PNG file)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_file(
    image: np.ndarray, quality: int, image_format: str = "jpeg", subsampling: str = "4:2:0"
) -> bytes:
    """The image file: the JPEG at ``quality``, or a PNG of that JPEG's decoded pixels."""
    check_image_format(image_format)
    jpeg = encode_jpeg(image, quality, subsampling)
    if image_format == "jpeg":
        return jpeg
    return encode_png_rgb(decode_image(jpeg), "sub")


@dataclass(frozen=True)
class JpegStage:
    """The plug-in's ``apply``: file settings fixed, quality as the parameter (no randomness)."""

    image_format: str = "jpeg"
    subsampling: str = "4:2:0"

    def __call__(self, image: np.ndarray, quality: float, rng: np.random.Generator) -> bytes:
        if quality != int(quality):
            raise PetctiqaError(f"jpeg quality must be an integer 1..100, got {quality!r}")
        return encode_file(image, int(quality), self.image_format, self.subsampling)


def configure(options: dict[str, Any]) -> JpegStage:
    """Plug-in settings: ``subsampling`` (4:4:4, 4:2:2, 4:2:0)."""
    unknown = sorted(set(options) - {"subsampling"})
    if unknown:
        raise PetctiqaError(f"unknown jpeg option {unknown[0]!r} (known: subsampling)")
    subsampling = options.get("subsampling", "4:2:0")
    if not isinstance(subsampling, str):
        raise PetctiqaError(f"subsampling must be a string, got {subsampling!r}")
    check_subsampling(subsampling)
    return JpegStage(subsampling=subsampling)


DISTORTION = register_distortion(
    Distortion(
        name=NAME,
        domain="encoded_file",
        parameter=Parameter("quality", "libjpeg quality", 100.0, 1.0, 100.0, integer=True),
        summary="baseline JPEG at a libjpeg quality (standard tables, 4:2:0); the image file",
        apply=JpegStage(),
        configure=configure,
    )
)
