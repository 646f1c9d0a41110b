"""Dataset protocols: what a PET-CT-IQA-DS-style dataset is made of, as data.

A protocol is a TOML file (``protocols/*.toml``); :func:`load_dataset_protocol` reads one by
name (shipped with the package) or by path, and validates every field, naming the bad one.
The file reading and the generic field readers are :mod:`petctiqa.protocol_toml`'s (shared with
the rating scale); the distortion axes are :mod:`petctiqa.protocol_axes`'s and ``extends``
:mod:`petctiqa.protocol_extends`'s.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petctiqa.colormaps import COLORMAP_NAMES
from petctiqa.errors import ProtocolError
from petctiqa.protocol_axes import (
    POISSON_PLUGINS,
    AxisSettings,
    check_design,
    classic_axes,
    parse_axes,
)
from petctiqa.protocol_extends import base_reference, check_chain, merge_protocol_data
from petctiqa.protocol_toml import (
    TomlTable,
    protocol_kind,
    resolve_protocol_path,
    shipped_protocol_names,
)

DEFAULT_DATASET_PROTOCOL = "pet-ct-iqa-ds"
POISSON_FORMS = ("impulse", "shot")
RENDER_MODES = ("fused", "ct", "pet")
IMAGE_FORMATS = ("jpeg", "png")
CHROMA_SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SelectionSettings:
    """How patients and slices are picked from a DICOM tree."""

    patients: int = 20
    slices_per_patient: int = 5
    min_body_fraction: float = 0.15
    """A slice is usable only if at least this fraction of its CT pixels is body (HU > -500)."""
    margin_fraction: float = 0.1
    """Fraction of the PET/CT overlap skipped at each end before spreading the slices."""


@dataclass(frozen=True)
class RenderSettings:
    """How one CT slice and the PET resampled onto it become a 512x512 RGB image."""

    size: int = 512
    mode: str = "fused"
    ct_window_width: float = 350.0
    ct_window_level: float = 40.0
    colormap: str = "hot"
    suv_min: float = 0.0
    suv_max: float = 7.0
    ct_weight: float = 0.63
    pet_weight: float = 0.37
    normalize_max: bool = True


@dataclass(frozen=True)
class DistortionSettings:
    """The 3x3x3 grid. Index 0 of every list is the level-0 value (no noise / quality 100).

    A protocol written with ``[[distortions.axes]]`` sets ``axes``; classic protocols leave it
    None (so their recorded settings stay what they were) and :meth:`grid_axes` derives them.
    """

    poisson_form: str = "impulse"
    poisson_levels: tuple[float, ...] = (0.0, 0.005, 0.010)
    """impulse form: lambda per level; shot form: photon peak per level (0 = no noise)."""
    gaussian_sigmas: tuple[float, ...] = (0.0, 5.0, 10.0)
    jpeg_qualities: tuple[int, ...] = (100, 70, 40)
    jpeg_subsampling: str = "4:2:0"
    axes: tuple[AxisSettings, ...] | None = None
    images_per_slice: int | None = None
    """A continuous design's image count per slice (its axes give ranges); None: a grid."""

    def grid_axes(self) -> tuple[AxisSettings, ...]:
        """The ordered axes of the grid, whichever TOML shape described them."""
        return self.axes if self.axes is not None else classic_axes(self)


@dataclass(frozen=True)
class OutputSettings:
    image_format: str = "jpeg"
    test_fraction: float = 0.2


@dataclass(frozen=True)
class DatasetProtocol:
    name: str
    description: str
    selection: SelectionSettings
    render: RenderSettings
    distortions: DistortionSettings
    output: OutputSettings
    source: str = "<built-in>"
    """Where the protocol was read from (a path or ``package:NAME``)."""


# ----------------------------------------------------------------------------- dataset protocol


@functools.cache
def _root_data() -> dict[str, Any]:
    """The shipped default protocol as parsed TOML: the one place the defaults are written."""
    data, _ = resolve_protocol_path(DEFAULT_DATASET_PROTOCOL)
    return data


def _default(table: str, key: str, sub: str | None = None) -> Any:
    """A field's value in the default protocol (used for fields a file may leave out)."""
    root = _root_data()[table]
    return root[sub][key] if sub else root[key]


def resolve_extends(
    data: dict[str, Any], source: str, chain: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``data`` with its ``extends`` chain merged in (see :mod:`petctiqa.protocol_extends`).

    Each base is validated as a protocol of its own first, so a problem in a base names the
    base's file."""
    if "extends" not in data:
        return data
    check_chain(chain, source)
    data_base, base_source = resolve_protocol_path(
        base_reference(data["extends"], source), kind="dataset"
    )
    check_chain((*chain, source), base_source)
    base = resolve_extends(data_base, base_source, (*chain, source))
    _parse_complete(base, base_source)
    return merge_protocol_data(base, data)


def parse_dataset_protocol(data: dict[str, Any], source: str) -> DatasetProtocol:
    """Validate a parsed TOML document (resolving ``extends``) and build a :class:`DatasetProtocol`."""
    if protocol_kind(data) == "rating-scale" and "protocol" not in data:
        shown = source.removeprefix("package:")
        raise ProtocolError(
            f"{shown} is a rating-scale protocol, not a dataset protocol (dataset protocols: "
            f"{', '.join(shipped_protocol_names('dataset'))})"
        )
    return _parse_complete(resolve_extends(data, source), source)


def _parse_complete(data: dict[str, Any], source: str) -> DatasetProtocol:
    root = TomlTable(data, source)
    head = root.table("protocol")
    name = head.string("name")
    description = head.string("description", "")
    head.integer("version", 1, low=1, high=1)
    head.finish()
    protocol = DatasetProtocol(
        name=name,
        description=description,
        selection=_parse_selection(root.table("selection")),
        render=_parse_render(root.table("render")),
        distortions=_parse_distortions(root.table("distortions")),
        output=_parse_output(root.table("output")),
        source=source,
    )
    root.finish()
    return protocol


def _parse_selection(sel: TomlTable) -> SelectionSettings:
    selection = SelectionSettings(
        patients=sel.integer("patients", low=1),
        slices_per_patient=sel.integer("slices_per_patient", low=1),
        min_body_fraction=sel.number(
            "min_body_fraction", _default("selection", "min_body_fraction"), low=0.0, high=1.0
        ),
        margin_fraction=sel.number(
            "margin_fraction", _default("selection", "margin_fraction"), low=0.0, high=0.45
        ),
    )
    sel.finish()
    return selection


def _parse_render(ren: TomlTable) -> RenderSettings:
    render = RenderSettings(
        size=ren.integer("size", _default("render", "size"), low=16, high=4096),
        mode=ren.string("mode", _default("render", "mode"), choices=RENDER_MODES),
        ct_window_width=ren.number("ct_window_width", low=1.0),
        ct_window_level=ren.number("ct_window_level", low=-2000.0, high=4000.0),
        colormap=ren.string("colormap", _default("render", "colormap"), choices=COLORMAP_NAMES),
        suv_min=ren.number("suv_min", _default("render", "suv_min"), low=0.0),
        suv_max=ren.number("suv_max", low=0.0),
        ct_weight=ren.number("ct_weight", low=0.0, high=1.0),
        pet_weight=ren.number("pet_weight", low=0.0, high=1.0),
        normalize_max=ren.boolean("normalize_max", _default("render", "normalize_max")),
    )
    if render.suv_max <= render.suv_min:
        raise ren.error(
            "suv_max", f"must be greater than suv_min ({render.suv_min}), got {render.suv_max}"
        )
    _check_weights(ren, render)
    ren.finish()
    return render


def _parse_distortions(dis: TomlTable) -> DistortionSettings:
    if dis.has("axes"):
        axes = parse_axes(dis)
        images = (
            dis.integer("images_per_slice", low=1, high=10000)
            if dis.has("images_per_slice")
            else None
        )
        check_design(dis, axes, images)
        dis.finish()
        if images is not None:
            return DistortionSettings(axes=axes, images_per_slice=images)
        return _settings_from_axes(axes)
    poi = dis.table("poisson")
    form = poi.string("form", choices=POISSON_FORMS)
    poisson_levels = poi.number_list("levels", 3, low=0.0)
    poi.finish()
    gau = dis.table("gaussian")
    sigmas = gau.number_list("sigmas", 3, low=0.0, high=255.0)
    gau.finish()
    jpg = dis.table("jpeg")
    qualities = jpg.number_list("qualities", 3, low=1, high=100)
    if any(q != int(q) for q in qualities):
        raise jpg.error("qualities", f"must be integers 1..100, got {list(qualities)}")
    subsampling = jpg.string(
        "subsampling", _default("distortions", "subsampling", "jpeg"), choices=CHROMA_SUBSAMPLINGS
    )
    jpg.finish()
    dis.finish()
    return DistortionSettings(
        poisson_form=form,
        poisson_levels=poisson_levels,
        gaussian_sigmas=sigmas,
        jpeg_qualities=tuple(int(q) for q in qualities),
        jpeg_subsampling=subsampling,
    )


def _settings_from_axes(axes: tuple[AxisSettings, ...]) -> DistortionSettings:
    """Axes as settings. Exactly the classic three (same plug-ins, codes p/g/j, 3 levels each,
    no options but the JPEG subsampling) give the classic settings: same grid, same bytes."""
    forms = {v: k for k, v in POISSON_PLUGINS.items()}
    shape = [(a.distortion, a.code, len(a.levels)) for a in axes]
    classic_shape = [("gaussian", "g", 3), ("jpeg", "j", 3)]
    other_options = [a.options for a in axes[:2]] + [
        tuple(kv for kv in axes[-1].options if kv[0] != "subsampling")
    ]
    if (
        len(axes) == 3
        and axes[0].distortion in forms
        and (axes[0].code, len(axes[0].levels)) == ("p", 3)
        and shape[1:] == classic_shape
        and not any(other_options)
    ):
        return DistortionSettings(
            poisson_form=forms[axes[0].distortion],
            poisson_levels=axes[0].levels,
            gaussian_sigmas=axes[1].levels,
            jpeg_qualities=tuple(int(q) for q in axes[2].levels),
            jpeg_subsampling=dict(axes[2].options).get("subsampling", "4:2:0"),
        )
    return DistortionSettings(axes=axes)


def _parse_output(out: TomlTable) -> OutputSettings:
    output = OutputSettings(
        image_format=out.string(
            "image_format", _default("output", "image_format"), choices=IMAGE_FORMATS
        ),
        test_fraction=out.number(
            "test_fraction", _default("output", "test_fraction"), low=0.0, high=0.9
        ),
    )
    out.finish()
    return output


def _check_weights(ren: TomlTable, render: RenderSettings) -> None:
    """Refuse blend weights that make every fused image black.

    Both weights are already known to lie in [0, 1]. Only mode ``fused`` uses them (``ct`` and
    ``pet`` draw their layer at full strength, so any CT window or SUV range gives a non-black
    image). Fused, the brightest possible pixel is ``255 * (ct_weight + pet_weight)``, scaled to
    255 with ``normalize_max``; without it, it must round to at least 1.
    """
    if render.mode != "fused":
        return
    total = render.ct_weight + render.pet_weight
    if total <= 0.0:
        raise ren.error(
            "pet_weight",
            "must be > 0 when render.ct_weight is 0 in mode 'fused' (every image would be "
            "black); set ct_weight, pet_weight or both above 0",
        )
    if not render.normalize_max and round(255.0 * total) < 1:
        raise ren.error(
            "ct_weight",
            f"+ render.pet_weight = {total} leaves every fused image black with "
            "normalize_max = false (the brightest pixel would be 255 x their sum < 0.5)",
        )


def protocol_record(protocol: DatasetProtocol) -> dict[str, Any]:
    """The protocol as a build records it (``dataset.json``, and the settings a resumed build
    must match): every field but ``source``, and of the distortions only what the build uses.
    A classic grid records its tables as before axes existed (``axes`` null, no
    ``images_per_slice``); an axes protocol its ``axes`` (with ``images_per_slice`` for a
    continuous design), not the classic tables' defaults it never applies."""
    record = dataclasses.asdict(protocol)
    record.pop("source", None)
    distortions = record["distortions"]
    if protocol.distortions.axes is None:
        del distortions["images_per_slice"]
    else:
        kept = ("axes", "images_per_slice") if protocol.distortions.images_per_slice else ("axes",)
        record["distortions"] = {key: distortions[key] for key in kept}
    return record


def load_dataset_protocol(name_or_path: str | Path = DEFAULT_DATASET_PROTOCOL) -> DatasetProtocol:
    """Load and validate a dataset protocol by shipped name or by path."""
    data, source = resolve_protocol_path(name_or_path, kind="dataset")
    return parse_dataset_protocol(data, source)
