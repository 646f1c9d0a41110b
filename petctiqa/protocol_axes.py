"""Distortion axes of a dataset protocol: an ordered list of (registered distortion, levels).

Two TOML shapes describe the grid, and mean the same when they describe the same axes:

- the classic tables ``[distortions.poisson]`` (form + 3 levels), ``[distortions.gaussian]``
  (3 sigmas) and ``[distortions.jpeg]`` (3 qualities + subsampling): the axes
  ``impulse_poisson|shot_poisson`` (code ``p``), ``gaussian`` (``g``), ``jpeg`` (``j``);
- an array of tables, applied in the order written::

      [[distortions.axes]]
      distortion = "pet_count_reduction"   # a name from petctiqa.distortions.list_distortions()
      levels = [1.0, 0.25, 0.1]            # the plug-in's parameter, level 0 first
      code = "d"                           # one letter of the image code (default: 1st letter)
      options = { sensitivity = 0.005 }    # optional plug-in settings

  An axis may give ``range = [low, high]`` instead of ``levels``: a continuous design, where
  ``distortions.images_per_slice`` images per slice each draw every ranged axis's value
  uniformly from its range (seeded per image, see :mod:`petctiqa.distortions.design`).

Axes must follow the order data flows in a build (PET/CT volume domains, then the fused image,
then the file) and end with exactly one ``encoded_file`` axis (the JPEG that makes the file).
A protocol that extends another and gives ``distortions.axes`` replaces the inherited grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from petctiqa.errors import PetctiqaError

if TYPE_CHECKING:
    from petctiqa.protocol import DistortionSettings
    from petctiqa.protocol_toml import TomlTable

POISSON_PLUGINS = {"impulse": "impulse_poisson", "shot": "shot_poisson"}


@dataclass(frozen=True)
class AxisSettings:
    """One axis of the distortion grid."""

    distortion: str
    """Registered plug-in name (:func:`petctiqa.distortions.get_distortion`)."""
    levels: tuple[float, ...]
    """The plug-in's parameter per level; level 0 first (empty for a ranged axis)."""
    code: str
    """One lower-case letter; image codes read e.g. ``p1g0j2``."""
    options: tuple[tuple[str, Any], ...] = ()
    """Plug-in settings as sorted (key, value) pairs (hashable, JSON-friendly)."""
    value_range: tuple[float, float] | None = None
    """``(low, high)`` of a continuous axis (each image draws its value); None for levels."""


def classic_axes(settings: DistortionSettings) -> tuple[AxisSettings, ...]:
    """The three axes the classic tables stand for."""
    return (
        AxisSettings(POISSON_PLUGINS[settings.poisson_form], settings.poisson_levels, "p"),
        AxisSettings("gaussian", settings.gaussian_sigmas, "g"),
        AxisSettings(
            "jpeg",
            tuple(float(q) for q in settings.jpeg_qualities),
            "j",
            (("subsampling", settings.jpeg_subsampling),),
        ),
    )


def parse_axes(dis: TomlTable) -> tuple[AxisSettings, ...]:
    """Read and check ``distortions.axes`` (already known to be present)."""
    # lazy: import cycle (plug-ins import petctiqa.protocol's constants, which imports this)
    from petctiqa.distortions import DOMAINS, get_distortion

    items = dis.table_list("axes")
    axes: list[AxisSettings] = []
    last_domain = 0
    for table in items:
        name = table.string("distortion")
        try:
            plugin = get_distortion(name)
        except PetctiqaError as exc:
            raise table.error(
                "distortion", str(exc).replace("unknown distortion", "names")
            ) from None
        domain = DOMAINS.index(plugin.domain)
        if domain < last_domain:
            raise table.error(
                "distortion",
                f"acts on {plugin.domain} and must come before the {DOMAINS[last_domain]} axes",
            )
        last_domain = domain
        levels, value_range = _levels_or_range(table, plugin.parameter)
        code = table.string("code", name[0])
        if len(code) != 1 or not code.isalpha() or not code.islower():
            raise table.error("code", f"must be one lower-case letter, got {code!r}")
        if code in {a.code for a in axes}:
            raise table.error("code", f"{code!r} is already the code of another axis")
        options = table.table("options", required=False).raw()
        if options and plugin.configure is None:
            raise table.error("options", f"are not taken by distortion {name!r}")
        if options:
            try:
                plugin.configure(options)
            except PetctiqaError as exc:
                raise table.error("options", str(exc)) from None
        table.finish()
        axes.append(AxisSettings(name, levels, code, tuple(sorted(options.items())), value_range))
    encoded = [a for a in axes if get_distortion(a.distortion).domain == "encoded_file"]
    if len(encoded) != 1:
        raise dis.error("axes", "must end with exactly one encoded_file axis (e.g. jpeg)")
    return tuple(axes)


def _levels_or_range(table: TomlTable, parameter) -> tuple[tuple[float, ...], tuple | None]:
    """An axis's ``levels`` or its ``range = [low, high]`` (exactly one of the two)."""
    if table.has("levels") == table.has("range"):
        raise table.error("levels", "must be given, or else range = [low, high] (not both)")
    if table.has("levels"):
        return table.number_list("levels", None, low=parameter.low, high=parameter.high), None
    low, high = table.number_list("range", 2, low=parameter.low, high=parameter.high)
    if not low < high:
        raise table.error("range", f"must be [low, high] with low < high, got {[low, high]}")
    if parameter.integer and (low != int(low) or high != int(high)):
        raise table.error("range", f"must hold integers ({parameter.name}), got {[low, high]}")
    return (), (low, high)


def check_design(dis: TomlTable, axes: tuple[AxisSettings, ...], images: int | None) -> None:
    """A continuous design (``images_per_slice``) has ranged axes (and single-level ones, held
    fixed); a grid has none."""
    ranged = [a for a in axes if a.value_range is not None]
    if images is None and ranged:
        raise dis.error(
            "images_per_slice",
            f"is missing: axis {ranged[0].code!r} gives a range (a continuous design)",
        )
    if images is not None:
        if not ranged:
            raise dis.error("images_per_slice", "needs at least one axis with range = [low, high]")
        multi = [a for a in axes if len(a.levels) > 1]
        if multi:
            raise dis.error(
                "images_per_slice",
                f"cannot mix with levels: axis {multi[0].code!r} has {len(multi[0].levels)} "
                "levels (give it a range, or a single level to hold it fixed)",
            )
