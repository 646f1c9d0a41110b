"""The model registry: every trainable IQA model found by name (in the spirit of timm's
``register_model``).

Adding a model = one module that defines the network and its config and calls
:func:`register_model` with a :class:`ModelEntry`, plus one import line in
``petctiqa/models/__init__.py``. Everything else (``train --model``, ``pretrain``, ``score``,
``evaluate``, ``petctiqa models``, checkpoints) works from the entry.

A registered network must provide:

- ``forward(x) -> (B,)``: predicted quality on the normalised training scale (0..1 = the
  training MOS range);
- ``forward_parts(x) -> {"score", "s", "w"}`` each (B,) (``s = score``, ``w = 1`` for models
  without MS-IQA's weighting);
- ``features(x) -> (B, feature_dim)`` and ``feature_dim``: the representation that generator
  pretraining teaches (``petctiqa pretrain``);
- ``config`` with ``to_dict()``; the entry's ``config_from_dict`` inverts it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from petctiqa.errors import ModelError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    """Registry name (``train --model NAME``), lower case."""
    architecture: str
    """Human name stored in checkpoints, e.g. ``"MS-IQA"``."""
    summary: str
    input_contract: str
    """What the network reads, in words (size, resize or native crops)."""
    needs_gpu: bool
    """True when training in reasonable time needs a GPU."""
    config_from_dict: Callable[[dict[str, Any]], Any]
    build: Callable[[Any], Any]
    """config -> torch.nn.Module (random init; never downloads)."""
    default_config: Callable[[], Any]
    head_prefixes: tuple[str, ...]
    """State-dict prefixes of the head (trained at the head learning rate); the rest is trunk."""
    score_range: tuple[float, float] = (0.0, 4.0)
    lower_better: bool = False


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add ``entry``; a second entry under the same name is a programming error."""
    if entry.name in _REGISTRY:
        raise ModelError(f"model {entry.name!r} is registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    """The entry for ``name``; ModelError listing the registered names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; registered models: {', '.join(model_names())}"
        ) from None


def entry_for_architecture(architecture: str) -> ModelEntry:
    """The entry whose checkpoints carry ``architecture`` (older checkpoints have no name)."""
    for entry in _REGISTRY.values():
        if entry.architecture == architecture:
            return entry
    raise ModelError(f"no registered model has architecture {architecture!r}")


def build_model(name: str, config: dict[str, Any] | Any | None = None):
    """(module, config) for ``name``: ``config`` as a dict, a config object or None (defaults)."""
    entry = get_model_entry(name)
    if config is None:
        config = entry.default_config()
    elif isinstance(config, dict):
        config = entry.config_from_dict(dict(config))
    return entry.build(config), config


def head_and_trunk_parameters(model, entry: ModelEntry) -> tuple[list, list]:
    """Split ``model``'s parameters by the entry's head prefixes: (head, trunk)."""
    head, trunk = [], []
    for name, parameter in model.named_parameters():
        (head if name.startswith(entry.head_prefixes) else trunk).append(parameter)
    return head, trunk


@dataclass(frozen=True)
class ModelCard:
    """What ``petctiqa models`` prints for one entry."""

    name: str
    architecture: str
    summary: str
    input_contract: str
    parameters: int
    score_range: tuple[float, float]
    needs_gpu: bool


def model_card(name: str) -> ModelCard:
    """Instantiate the default config (random init) to count its parameters."""
    entry = get_model_entry(name)
    module, _ = build_model(name)
    return ModelCard(
        name=entry.name,
        architecture=entry.architecture,
        summary=entry.summary,
        input_contract=entry.input_contract,
        parameters=sum(p.numel() for p in module.parameters()),
        score_range=entry.score_range,
        needs_gpu=entry.needs_gpu,
    )
