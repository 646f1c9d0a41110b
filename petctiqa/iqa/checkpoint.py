"""Model checkpoints: one ``torch.save`` dict that holds everything scoring needs.

Keys: ``format`` ("petctiqa-msiqa", the historical name, kept so every checkpoint ever written
still loads), ``format_version`` (2; 1 = MS-IQA only, before the model registry),
``model_name`` (the registry name; absent in version 1, which means ``"msiqa"``),
``architecture`` (the entry's, e.g. "MS-IQA"), ``config`` (the model's config as a dict), ``label_scale`` ({"low", "high"}: the MOS values that
map to 0 and 1 in training), ``mos_range`` (the rating scale, (0, 4)), ``versions`` (petctiqa,
torch, timm), ``model`` (state dict), ``preprocessing`` (:class:`Preprocessing` as a dict),
``render_protocol`` ({"name", "render"} of the build-dataset protocol the training images were
rendered with, or None), ``simulated`` (trained on simulated ratings), and training state
(``epoch``, ``optimizer``, ``scaler``, ``history``, ``best``, ``train_groups``, ``test_groups``,
``rng``, ``rng_ranks``) where present. Checkpoints written before ``preprocessing`` and
``render_protocol`` existed load with the defaults (bicubic resize to the model's image size,
mean = std = 0.5; no render protocol). Files are written atomically and read with
``weights_only=True`` (no code runs on load).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from petctiqa import __version__
from petctiqa.atomic import atomic_write_bytes
from petctiqa.errors import DatasetError, ModelError
from petctiqa.iqa.preprocess import Preprocessing
from petctiqa.models import get_model_entry

CHECKPOINT_FORMAT = "petctiqa-msiqa"
CHECKPOINT_VERSION = 2
LEGACY_MODEL_NAME = "msiqa"
"""Version-1 checkpoints carry no model name: they are all MS-IQA."""


@dataclass(frozen=True)
class LabelScale:
    """Min-max label normalisation: ``normalised = (mos - low) / (high - low)``."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ModelError(f"label scale: high ({self.high}) must exceed low ({self.low})")

    def normalise(self, mos):
        return (mos - self.low) / (self.high - self.low)

    def denormalise(self, value):
        return value * (self.high - self.low) + self.low


def versions() -> dict[str, str]:
    import timm  # lazy: slow to import (docs/architecture.md); only saving records its version

    return {"petctiqa": __version__, "torch": str(torch.__version__), "timm": str(timm.__version__)}


def save_torch_file(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` ``payload`` to ``path`` atomically (a killed run leaves the old file)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (with format keys added) atomically to ``path``."""
    entry = get_model_entry(payload.get("model_name", LEGACY_MODEL_NAME))
    full = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_name": entry.name,
        "architecture": entry.architecture,
        "versions": versions(),
        "mos_range": [0.0, 4.0],
        **payload,
    }
    save_torch_file(path, full)


def read_checkpoint(path: Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint dict; ModelError for anything that is not ours."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((ln for ln in lines if "Unpickler error" in ln), lines[0] if lines else "")
        first = detail or type(exc).__name__
        raise ModelError(f"{path}: not a readable petctiqa checkpoint ({first})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ModelError(
            f"{path}: not a petctiqa MS-IQA checkpoint (format {found!r}, "
            f"expected {CHECKPOINT_FORMAT!r})"
        )
    entry = checkpoint_entry(data, path)
    if data.get("architecture") != entry.architecture:
        raise ModelError(
            f"{path}: checkpoint is for architecture {data.get('architecture')!r}, "
            f"not {entry.architecture!r} (model {entry.name!r})"
        )
    version = data.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ModelError(
            f"{path}: checkpoint format_version {version!r} is newer than this petctiqa "
            f"supports ({CHECKPOINT_VERSION}); upgrade petctiqa"
        )
    for key in ("config", "label_scale", "model"):
        if key not in data:
            raise ModelError(f"{path}: checkpoint lacks the {key!r} entry")
    return data


def checkpoint_entry(data: dict[str, Any], path: Path | str = ""):
    """The registry entry of a checkpoint dict (version 1: MS-IQA)."""
    name = data.get("model_name", LEGACY_MODEL_NAME)
    try:
        return get_model_entry(str(name))
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None


def checkpoint_preprocessing(data: dict[str, Any], image_size: int, path: Path | str = ""):
    """The checkpoint's :class:`Preprocessing`; older checkpoints get the defaults."""
    stored = data.get("preprocessing")
    if stored is None:
        return Preprocessing(size=image_size)
    try:
        prep = Preprocessing.from_dict(dict(stored))
    except (DatasetError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: bad preprocessing entry ({exc})") from None
    if prep.mode == "resize" and prep.size != image_size:
        raise ModelError(
            f"{path}: preprocessing size {prep.size} does not match the model's image size "
            f"{image_size}"
        )
    return prep


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    """The registered network in eval mode on the requested device."""
    label_scale: LabelScale
    payload: dict[str, Any]
    preprocessing: Any = None
    """:class:`petctiqa.iqa.data.Preprocessing` for this model's inputs."""


def load_model(path: Path, device: str = "cpu") -> LoadedModel:
    """Rebuild the model from a checkpoint (random-init trunks, then its state dict)."""
    data = read_checkpoint(path)
    entry = checkpoint_entry(data, path)
    try:
        config = entry.config_from_dict(dict(data["config"]))
    except (ModelError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: bad model config ({exc})") from None
    model = entry.build(config)
    try:
        model.load_state_dict(data["model"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"{path}: weights do not match the stored config ({first})") from None
    scale = LabelScale(float(data["label_scale"]["low"]), float(data["label_scale"]["high"]))
    return LoadedModel(
        model=model.to(device).eval(),
        label_scale=scale,
        payload=data,
        preprocessing=checkpoint_preprocessing(data, getattr(config, "image_size", 224), path),
    )
