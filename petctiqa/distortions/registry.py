"""The distortion registry: every distortion is a plug-in with a name, a domain and one parameter.

A plug-in is a :class:`Distortion` record whose ``apply(data, value, rng)`` returns a new,
distorted copy of ``data`` (never modifying it) and draws all its randomness from ``rng``, so a
seed from :func:`petctiqa.seeding.rng_for` makes it reproducible. ``data`` depends on the
domain the distortion acts in:

- ``pet_activity``: a :class:`petctiqa.distortions.slices.PetCtSlice` (PET activity in Bq/mL
  or SUV, with the CT and the geometry of the same slice); the PET part changes.
- ``ct_hu``: a :class:`~petctiqa.distortions.slices.PetCtSlice`; the CT (HU) part changes.
- ``fused_rgb``: a fused 8-bit RGB image, uint8 ``(rows, cols, 3)``.
- ``encoded_file``: a fused 8-bit RGB image in, the encoded file (``bytes``) out.

Plug-ins register themselves with :func:`register_distortion` when their module is imported;
``petctiqa.distortions`` imports the built-in ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from petctiqa.errors import PetctiqaError

DOMAINS = ("pet_activity", "ct_hu", "fused_rgb", "encoded_file")
"""Where a distortion acts, in the order a dataset build meets them (volumes before the render,
then the fused image, then its file)."""

ApplyFunction = Callable[[Any, float, np.random.Generator], Any]


@dataclass(frozen=True)
class Parameter:
    """The one parameter that a distortion's levels set."""

    name: str
    unit: str
    neutral: float
    """The value that leaves the data unchanged (0 for a noise level, 1 for a dose fraction)."""
    low: float
    """Smallest allowed value."""
    high: float = float("inf")
    """Largest allowed value."""
    integer: bool = False
    """Only whole numbers are valid (e.g. a JPEG quality); a drawn value is an integer."""

    def check(self, value: float, owner: str) -> None:
        if not (self.low <= value <= self.high):
            raise PetctiqaError(
                f"{owner}: {self.name} must be in [{self.low}, {self.high}] {self.unit}, "
                f"got {value!r}"
            )


@dataclass(frozen=True)
class Distortion:
    """One registered distortion."""

    name: str
    domain: str
    parameter: Parameter
    summary: str
    apply: ApplyFunction
    """``apply(data, value, rng)``: a distorted copy of ``data`` (see the module docstring)."""
    configure: Callable[[dict[str, Any]], ApplyFunction] | None = None
    """Plug-in settings (a protocol axis's ``options``) -> an ``apply`` using them; raises
    :class:`PetctiqaError` naming a bad setting. None: the plug-in takes no settings."""

    def with_options(self, options: dict[str, Any]) -> Distortion:
        """The same plug-in with its settings changed (no options: itself)."""
        if not options:
            return self
        if self.configure is None:
            raise PetctiqaError(f"distortion {self.name!r} takes no options, got {options}")
        return dataclasses.replace(self, apply=self.configure(dict(options)))

    def __call__(self, data: Any, value: float, rng: np.random.Generator) -> Any:
        self.parameter.check(float(value), f"distortion {self.name!r}")
        return self.apply(data, float(value), rng)


_REGISTRY: dict[str, Distortion] = {}


def keyword_configure(name: str, model: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
    """A ``configure`` that builds ``model(**options)`` and turns an unknown or missing option
    into a PetctiqaError naming the plug-in (for plug-ins whose model is a keyword dataclass)."""

    def configure(options: dict[str, Any]) -> Any:
        try:
            return model(**options)
        except TypeError as exc:
            raise PetctiqaError(f"{name}: {exc}") from None

    return configure


def register_distortion(distortion: Distortion) -> Distortion:
    """Add a plug-in; names are unique (registering the same record twice is a no-op)."""
    if distortion.domain not in DOMAINS:
        raise PetctiqaError(
            f"distortion {distortion.name!r}: domain must be one of {', '.join(DOMAINS)}, "
            f"got {distortion.domain!r}"
        )
    known = _REGISTRY.get(distortion.name)
    if known is not None and known is not distortion:
        raise PetctiqaError(f"distortion {distortion.name!r} is already registered")
    _REGISTRY[distortion.name] = distortion
    return distortion


def get_distortion(name: str) -> Distortion:
    """The plug-in called ``name``; a clear error listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise PetctiqaError(f"unknown distortion {name!r} (known: {known})") from None


def list_distortions(domain: str | None = None) -> list[Distortion]:
    """Registered plug-ins sorted by name, optionally only those of one domain."""
    return [d for _, d in sorted(_REGISTRY.items()) if domain is None or d.domain == domain]
