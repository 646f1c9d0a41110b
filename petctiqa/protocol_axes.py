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

Axes must follow the order data flows in a build (PET/CT volume domains, then the fused image,
then the file) and end with exactly one ``encoded_file`` axis (the JPEG that makes the file).
A protocol that extends another and gives ``distortions.axes`` replaces the inherited grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from petctiqa.errors import PetctiqaError

if TYPE_CHECKING:
    from petctiqa.protocol import DistortionSettings, TomlTable

POISSON_PLUGINS = {"impulse": "impulse_poisson", "shot": "shot_poisson"}


@dataclass(frozen=True)
class AxisSettings:
    """One axis of the distortion grid."""

    distortion: str
    """Registered plug-in name (:func:`petctiqa.distortions.get_distortion`)."""
    levels: tuple[float, ...]
    """The plug-in's parameter per level; level 0 first."""
    code: str
    """One lower-case letter; image codes read e.g. ``p1g0j2``."""
    options: tuple[tuple[str, Any], ...] = ()
    """Plug-in settings as sorted (key, value) pairs (hashable, JSON-friendly)."""


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
        parameter = plugin.parameter
        levels = table.number_list("levels", None, low=parameter.low, high=parameter.high)
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
        axes.append(AxisSettings(name, levels, code, tuple(sorted(options.items()))))
    encoded = [a for a in axes if get_distortion(a.distortion).domain == "encoded_file"]
    if len(encoded) != 1:
        raise dis.error("axes", "must end with exactly one encoded_file axis (e.g. jpeg)")
    return tuple(axes)
