"""Registered IQA models. Importing this package registers every model below (one line each).

See :mod:`petctiqa.models.registry` for the contract a model fulfils.
"""

from petctiqa.models import msiqa as _msiqa  # noqa: F401  (registers "msiqa")
from petctiqa.models import petct_cnn as _petct_cnn  # noqa: F401  (registers "petct-cnn")
from petctiqa.models.registry import (
    ModelCard,
    ModelEntry,
    build_model,
    entry_for_architecture,
    get_model_entry,
    head_and_trunk_parameters,
    model_card,
    model_names,
    register_model,
)

__all__ = [
    "ModelCard",
    "ModelEntry",
    "build_model",
    "entry_for_architecture",
    "get_model_entry",
    "head_and_trunk_parameters",
    "model_card",
    "model_names",
    "register_model",
]
