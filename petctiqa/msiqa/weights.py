"""Offline ImageNet weights for the MS-IQA trunks. Nothing here ever downloads.

Sources, in order: an explicit file per trunk (``.pth``/``.pt``/``.bin`` state dict, possibly
nested under ``state_dict``/``model``, or ``.safetensors``), then the Hugging Face hub cache
(``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``; repos
``timm/resnet50.tv_in1k`` and ``timm/swin_tiny_patch4_window7_224.ms_in1k``), then the torch hub
cache (``$TORCH_HOME/hub/checkpoints`` or ``~/.cache/torch/hub/checkpoints``; torchvision's
``resnet50-*.pth``, timm's ``swin_tiny_patch4_window7_224*.pth``).

Full-model state dicts (with the classifier ``fc.*``/``head.*``) are accepted: keys the
``features_only`` trunk lacks are dropped, timm's ``layers.N`` -> ``layers_N`` renaming is applied,
original Microsoft Swin checkpoints go through timm's own checkpoint filter, and every trunk key
must then be present with the right shape.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from petctiqa.errors import ModelError
from petctiqa.msiqa.model import RESNET_NAME, SWIN_NAME

HF_REPOS = {
    "resnet50": "timm/resnet50.tv_in1k",
    "swin_tiny_patch4_window7_224": "timm/swin_tiny_patch4_window7_224.ms_in1k",
}
TORCH_HUB_PATTERNS = {
    "resnet50": ("resnet50-*.pth", "resnet50_*.pth"),
    "swin_tiny_patch4_window7_224": ("swin_tiny_patch4_window7_224*.pth",),
}
WEIGHT_FILE_NAMES = ("model.safetensors", "pytorch_model.bin")


def hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


def torch_hub_checkpoints() -> Path:
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    return Path(home) / "hub" / "checkpoints"


def cache_locations(model_name: str) -> list[Path]:
    """Folders/patterns searched for ``model_name`` (for messages and for the search)."""
    repo = HF_REPOS[model_name]
    return [
        hf_hub_cache() / ("models--" + repo.replace("/", "--")) / "snapshots",
        torch_hub_checkpoints(),
    ]


def find_cached_weights(model_name: str) -> Path | None:
    """A cached weight file for ``model_name``, or None."""
    snapshots, torch_dir = cache_locations(model_name)
    if snapshots.is_dir():
        for snapshot in sorted(snapshots.iterdir()):
            for name in WEIGHT_FILE_NAMES:
                if (snapshot / name).is_file():
                    return snapshot / name
    if torch_dir.is_dir():
        for pattern in TORCH_HUB_PATTERNS[model_name]:
            found = sorted(torch_dir.glob(pattern))
            if found:
                return found[0]
    return None


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors from a .safetensors or torch file (nested ``state_dict``/``model`` unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weight file not found")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for bad files
        raise ModelError(f"{path}: cannot read weights ({str(exc).splitlines()[0]})") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ModelError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _to_trunk_keys(model_name: str, state: dict[str, Any]) -> dict[str, Any]:
    original_ms_layout = (
        model_name.startswith("swin")
        and "layers.0.blocks.0.attn.qkv.weight" in state
        and "head.weight" in state
        and "head.fc.weight" not in state
    )
    if original_ms_layout:
        # Original Microsoft checkpoint layout: let timm convert it.
        # lazy: timm is slow to import (docs/architecture.md); only this layout needs it
        import timm
        from timm.models.swin_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, timm.create_model(model_name, pretrained=False))
    return {re.sub(r"^layers\.(\d+)\.", r"layers_\1.", k): v for k, v in state.items()}


def load_trunk_weights(trunk, model_name: str, path: Path) -> None:
    """Copy weights from ``path`` into a timm ``features_only`` trunk (strict on trunk keys)."""
    state = _to_trunk_keys(model_name, read_state_dict(path))
    own = trunk.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ModelError(
            f"{path}: not {model_name} weights ({len(missing)} trunk keys missing, "
            f"e.g. {missing[0]!r})"
        )
    wrong = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        raise ModelError(
            f"{path}: shape mismatch for {wrong[0]!r}: file {tuple(state[wrong[0]].shape)}, "
            f"model {tuple(own[wrong[0]].shape)}"
        )
    trunk.load_state_dict({k: state[k] for k in own}, strict=True)


class TrunkWeightsError(ModelError):
    """A trunk's weights are missing, or a file was given for a trunk the model lacks.

    ``trunk`` is the trunk's timm model name, so that a caller can say how to give them (the
    command line names its own option)."""

    def __init__(self, message: str, trunk: str) -> None:
        super().__init__(message)
        self.trunk = trunk


def resolve_weights(model_name: str, explicit: Path | None) -> Path:
    """The weight file to use for ``model_name``: ``explicit`` or a cached file, else ModelError
    listing where it looked and how to provide weights."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise ModelError(f"{explicit}: {model_name} weight file not found")
        return Path(explicit)
    found = find_cached_weights(model_name)
    if found is not None:
        return found
    looked = " and ".join(str(p) for p in cache_locations(model_name))
    raise TrunkWeightsError(
        f"no ImageNet weights for {model_name}: looked in {looked}; give a weight file "
        f"(.pth/.safetensors) or place the Hugging Face repo {HF_REPOS[model_name]} in the hub "
        "cache (petctiqa never downloads)",
        model_name,
    )


def load_pretrained_trunks(
    model,
    resnet_weights: Path | None = None,
    swin_weights: Path | None = None,
    all_trunks: bool = True,
) -> dict[str, Path]:
    """Load ImageNet weights into the model's trunks; returns {model name: file used}.

    ``all_trunks=True``: every trunk the model has, from its explicit file or
    the offline caches. ``all_trunks=False``: only the trunks given an explicit file (a weight
    file implies pretraining for its trunk); the others keep their random initialisation.
    A file given for a trunk the model does not have is an error, not silently ignored.
    """
    used: dict[str, Path] = {}
    for trunk, name, explicit in (
        (model.resnet, RESNET_NAME, resnet_weights),
        (model.swin, SWIN_NAME, swin_weights),
    ):
        if trunk is None:
            if explicit is not None:
                raise TrunkWeightsError(
                    f"{explicit}: weights given for {name}, but this model configuration has no "
                    f"{name} trunk",
                    name,
                )
            continue
        if explicit is None and not all_trunks:
            continue
        path = resolve_weights(name, explicit)
        load_trunk_weights(trunk, name, path)
        used[name] = path
    return used
