"""Dataset protocols: what a PET-CT-IQA-DS-style dataset is made of, as data.

A protocol is a TOML file (``protocols/*.toml``); :func:`load_dataset_protocol` reads one by
name (shipped with the package) or by path, and validates every field, naming the bad one.
The generic field readers (:class:`TomlTable`) are reused by the other protocol kinds
(e.g. the rating scale in :mod:`petctiqa.ratings.scale`).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from petctiqa.colormaps import COLORMAP_NAMES
from petctiqa.errors import ProtocolError

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
    """The 3x3x3 grid. Index 0 of every list is the level-0 value (no noise / quality 100)."""

    poisson_form: str = "impulse"
    poisson_levels: tuple[float, ...] = (0.0, 0.005, 0.010)
    """impulse form: lambda per level; shot form: photon peak per level (0 = no noise)."""
    gaussian_sigmas: tuple[float, ...] = (0.0, 5.0, 10.0)
    jpeg_qualities: tuple[int, ...] = (100, 70, 40)
    jpeg_subsampling: str = "4:2:0"


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


# ----------------------------------------------------------------------------- validation


class TomlTable:
    """Typed, validated access to one table of a protocol file.

    Every accessor raises :class:`ProtocolError` naming the source file and the dotted field.
    Unknown keys are rejected by :meth:`finish` so typos do not pass silently.
    """

    def __init__(self, data: dict[str, Any], source: str, prefix: str = "") -> None:
        self._data = data
        self._source = source
        self._prefix = prefix
        self._seen: set[str] = set()

    def _field(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def error(self, key: str, problem: str) -> ProtocolError:
        return ProtocolError(f"{self._source}: field '{self._field(key)}' {problem}")

    def _get(self, key: str, default: Any, required: bool) -> Any:
        self._seen.add(key)
        if key not in self._data:
            if required:
                raise self.error(key, "is missing")
            return default
        return self._data[key]

    def table(self, key: str, required: bool = True) -> TomlTable:
        value = self._get(key, {}, required)
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table, got {value!r}")
        return TomlTable(value, self._source, f"{self._field(key)}.")

    def string(self, key: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        value = self._get(key, default, default is None)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {value!r}")
        if choices and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def boolean(self, key: str, default: bool | None = None) -> bool:
        value = self._get(key, default, default is None)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def integer(
        self, key: str, default: int | None = None, low: int | None = None, high: int | None = None
    ) -> int:
        value = self._get(key, default, default is None)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        self._check_range(key, value, low, high)
        return value

    def number(
        self,
        key: str,
        default: float | None = None,
        low: float | None = None,
        high: float | None = None,
    ) -> float:
        value = self._get(key, default, default is None)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.error(key, f"must be a finite number, got {value!r}")
        self._check_range(key, value, low, high)
        return float(value)

    def number_list(
        self, key: str, length: int, low: float | None = None, high: float | None = None
    ) -> tuple[float, ...]:
        value = self._get(key, None, True)
        if not isinstance(value, list) or len(value) != length:
            raise self.error(key, f"must be a list of {length} numbers, got {value!r}")
        for item in value:
            if (
                isinstance(item, bool)
                or not isinstance(item, int | float)
                or not math.isfinite(item)
            ):
                raise self.error(key, f"must hold finite numbers only, got {item!r}")
            self._check_range(key, item, low, high)
        return tuple(float(v) for v in value)

    def _check_range(self, key: str, value: float, low: float | None, high: float | None) -> None:
        if low is not None and value < low:
            raise self.error(key, f"must be >= {low}, got {value!r}")
        if high is not None and value > high:
            raise self.error(key, f"must be <= {high}, got {value!r}")

    def finish(self) -> None:
        """Reject keys that no accessor asked for (typos, fields from another version)."""
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise self.error(unknown[0], "is not a known field")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning I/O and syntax problems into a :class:`ProtocolError`."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ProtocolError(f"{path}: protocol file not found") from None
    except OSError as exc:
        raise ProtocolError(f"{path}: cannot read protocol file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{path}: invalid TOML ({exc})") from None


PROTOCOL_KINDS = {"protocol": "dataset", "scale": "rating-scale"}
"""The top-level table that tells a protocol file's kind -> the kind's name."""


def protocol_kind(data: dict[str, Any]) -> str | None:
    """``"dataset"`` (a ``[protocol]`` table), ``"rating-scale"`` (a ``[scale]`` table) or None."""
    for table, kind in PROTOCOL_KINDS.items():
        if isinstance(data.get(table), dict):
            return kind
    return None


def shipped_protocol_names(kind: str | None = None) -> list[str]:
    """Names of the protocol files that ship with the package (without ``.toml``); with
    ``kind`` (``"dataset"``, ``"rating-scale"``) only those of that kind."""
    root = resources.files("petctiqa_protocols")
    names = []
    for entry in root.iterdir():
        if not entry.name.endswith(".toml"):
            continue
        if kind is not None:
            try:
                with entry.open("rb") as handle:
                    if protocol_kind(tomllib.load(handle)) != kind:
                        continue
            except tomllib.TOMLDecodeError:
                continue
        names.append(entry.name[:-5])
    return sorted(names)


def resolve_protocol_path(
    name_or_path: str | Path, kind: str | None = None
) -> tuple[dict[str, Any], str]:
    """Read a protocol given a shipped name (``pet-ct-iqa-ds``) or a path to a TOML file.

    ``kind`` only narrows the shipped names listed when the name is unknown."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists() or "/" in str(name_or_path):
        return read_toml(candidate), str(candidate)
    shipped = resources.files("petctiqa_protocols") / f"{name_or_path}.toml"
    if not shipped.is_file():
        known = ", ".join(shipped_protocol_names(kind))
        what = "protocol" if kind is None else f"{kind} protocol"
        raise ProtocolError(
            f"unknown {what} {str(name_or_path)!r}: not a file, and not a shipped {what} ({known})"
        )
    with shipped.open("rb") as handle:
        try:
            return tomllib.load(handle), f"package:{name_or_path}"
        except tomllib.TOMLDecodeError as exc:
            raise ProtocolError(f"package:{name_or_path}: invalid TOML ({exc})") from None


# ----------------------------------------------------------------------------- dataset protocol


def parse_dataset_protocol(data: dict[str, Any], source: str) -> DatasetProtocol:
    """Validate a parsed TOML document and build a :class:`DatasetProtocol`."""
    if protocol_kind(data) == "rating-scale" and "protocol" not in data:
        shown = source.removeprefix("package:")
        raise ProtocolError(
            f"{shown} is a rating-scale protocol, not a dataset protocol (dataset protocols: "
            f"{', '.join(shipped_protocol_names('dataset'))})"
        )
    root = TomlTable(data, source)
    head = root.table("protocol")
    name = head.string("name")
    description = head.string("description", "")
    head.integer("version", 1, low=1, high=1)
    head.finish()

    sel = root.table("selection")
    selection = SelectionSettings(
        patients=sel.integer("patients", low=1),
        slices_per_patient=sel.integer("slices_per_patient", low=1),
        min_body_fraction=sel.number("min_body_fraction", 0.15, low=0.0, high=1.0),
        margin_fraction=sel.number("margin_fraction", 0.1, low=0.0, high=0.45),
    )
    sel.finish()

    ren = root.table("render")
    render = RenderSettings(
        size=ren.integer("size", 512, low=16, high=4096),
        mode=ren.string("mode", "fused", choices=RENDER_MODES),
        ct_window_width=ren.number("ct_window_width", low=1.0),
        ct_window_level=ren.number("ct_window_level", low=-2000.0, high=4000.0),
        colormap=ren.string("colormap", "hot", choices=COLORMAP_NAMES),
        suv_min=ren.number("suv_min", 0.0, low=0.0),
        suv_max=ren.number("suv_max", low=0.0),
        ct_weight=ren.number("ct_weight", low=0.0, high=1.0),
        pet_weight=ren.number("pet_weight", low=0.0, high=1.0),
        normalize_max=ren.boolean("normalize_max", True),
    )
    if render.suv_max <= render.suv_min:
        raise ren.error(
            "suv_max", f"must be greater than suv_min ({render.suv_min}), got {render.suv_max}"
        )
    _check_weights(ren, render)
    ren.finish()

    dis = root.table("distortions")
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
    subsampling = jpg.string("subsampling", "4:2:0", choices=CHROMA_SUBSAMPLINGS)
    jpg.finish()
    dis.finish()
    distortions = DistortionSettings(
        poisson_form=form,
        poisson_levels=poisson_levels,
        gaussian_sigmas=sigmas,
        jpeg_qualities=tuple(int(q) for q in qualities),
        jpeg_subsampling=subsampling,
    )

    out = root.table("output")
    output = OutputSettings(
        image_format=out.string("image_format", "jpeg", choices=IMAGE_FORMATS),
        test_fraction=out.number("test_fraction", 0.2, low=0.0, high=0.9),
    )
    out.finish()
    root.finish()
    return DatasetProtocol(
        name=name,
        description=description,
        selection=selection,
        render=render,
        distortions=distortions,
        output=output,
        source=source,
    )


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


def load_dataset_protocol(name_or_path: str | Path = DEFAULT_DATASET_PROTOCOL) -> DatasetProtocol:
    """Load and validate a dataset protocol by shipped name or by path."""
    data, source = resolve_protocol_path(name_or_path, kind="dataset")
    return parse_dataset_protocol(data, source)
