"""Latent quality from distortion parameters, for simulating raters on protocols other than
the published one.

``collect-ratings simulate`` is calibrated to the published PET-CT-IQA-DS MOS table, which
exists only for the classic Poisson x Gaussian x JPEG grid. For any other protocol the user
must say how quality depends on the parameters, in a JSON file::

    {"intercept": 3.8,
     "coefficients": {"pet_count_reduction_fraction": 0.9, "ct_dose_reduction_fraction": 0.5}}

The latent quality of an image is ``intercept + sum(coefficient * value)`` over the named
manifest columns (the exact parameter values the build recorded), on the rating scale; the
simulated raters then add their bias and noise as for the published table
(:mod:`petctiqa.ratings.simulate`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petctiqa.dataset.folder import DatasetFolder, read_manifest_header, read_manifest_rows
from petctiqa.dataset.manifest import CLASSIC_AXIS_COLUMNS, axis_columns
from petctiqa.errors import DatasetError
from petctiqa.seeding import rng_for

CLASSIC_LEVEL_COLUMNS = tuple(a.level for a in CLASSIC_AXIS_COLUMNS if a.level is not None)
"""The published grid's level columns: the MOS table is keyed by them."""


class NeedsLatentModel(DatasetError):
    """A dataset the published MOS table does not describe was to be simulated without a
    latent-quality model."""


@dataclass(frozen=True)
class LatentQualityModel:
    """A linear map from manifest parameter columns to latent quality."""

    intercept: float
    coefficients: tuple[tuple[str, float], ...]
    source: str

    def latent(self, parameters: Mapping[str, float]) -> float:
        return self.intercept + sum(w * float(parameters[c]) for c, w in self.coefficients)


def load_latent_model(path: Path) -> LatentQualityModel:
    """Read a latent-quality model file; errors name the file and the field."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: latent-quality model file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the latent-quality model ({exc})") from None
    if not isinstance(data, dict) or set(data) - {"intercept", "coefficients"}:
        raise DatasetError(f"{path}: must be a JSON object with intercept and coefficients only")
    intercept = data.get("intercept")
    coefficients = data.get("coefficients")
    if not _finite(intercept):
        raise DatasetError(f"{path}: field 'intercept' must be a finite number, got {intercept!r}")
    if not isinstance(coefficients, dict) or not coefficients:
        raise DatasetError(f"{path}: field 'coefficients' must map manifest columns to numbers")
    for column, weight in coefficients.items():
        if not _finite(weight):
            raise DatasetError(
                f"{path}: field 'coefficients.{column}' must be a finite number, got {weight!r}"
            )
    pairs = tuple(sorted((str(c), float(w)) for c, w in coefficients.items()))
    return LatentQualityModel(float(intercept), pairs, str(path))


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_simulation_design(dataset: Path, model: LatentQualityModel | None) -> None:
    """Refuse to simulate a dataset the published MOS table does not describe, unless a
    latent-quality model is given; check that the model's columns are in the manifest."""
    header = read_manifest_header(dataset)
    manifest = DatasetFolder(Path(dataset)).manifest
    if model is None:
        if all(c in header for c in CLASSIC_LEVEL_COLUMNS):
            return
        shown = ", ".join(a.value for a in axis_columns(header, str(manifest)))
        raise NeedsLatentModel(
            f"{manifest}: the simulated raters are calibrated to the published PET-CT-IQA-DS "
            "MOS table (Poisson x Gaussian x JPEG levels), and this dataset's images have "
            f"other parameters ({shown or 'none recorded'}); simulating them needs a "
            'latent-quality model, a JSON file {"intercept": ..., "coefficients": '
            '{"<column>": ...}} mapping those columns to latent quality (docs/ratings.md)'
        )
    missing = [c for c, _ in model.coefficients if c not in header]
    if missing:
        raise DatasetError(f"{model.source}: column '{missing[0]}' is not in {manifest}")


def latent_from_model(
    model: LatentQualityModel,
    image_keys: Sequence[str],
    parameters: Sequence[Mapping[str, float]],
    seed: int,
    image_sd: float,
) -> np.ndarray:
    """Latent quality per image: the model's value + ``N(0, image_sd^2)`` from the same
    per-image generator as the published table's simulation."""
    base = np.array([model.latent(p) for p in parameters], dtype=float)
    offsets = np.array(
        [rng_for(seed, f"simulate/image/{key}").normal(0.0, image_sd) for key in image_keys]
    )
    return base + offsets


def read_parameters(dataset: Path, model: LatentQualityModel) -> dict[str, dict[str, float]]:
    """Image path -> the model's parameter columns, from ``manifest.csv``."""
    columns = tuple(c for c, _ in model.coefficients)
    out: dict[str, dict[str, float]] = {}
    for where, row in read_manifest_rows(Path(dataset), ("image", *columns)):
        values = {}
        for column in columns:
            try:
                values[column] = float(row[column])
            except ValueError:
                raise DatasetError(
                    f"{where}: column '{column}' has bad value {row[column]!r}"
                ) from None
        out[row["image"]] = values
    return out
