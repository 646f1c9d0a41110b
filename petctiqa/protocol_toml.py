"""Protocol files: TOML read with errors that name the file and the field.

:class:`TomlTable` gives typed, validated access to one table (the dataset protocol in
:mod:`petctiqa.protocol`, the rating scale in :mod:`petctiqa.ratings.scale`);
:func:`resolve_protocol_path` reads a protocol by shipped name (``protocols/*.toml``, the
``petctiqa_protocols`` package) or by path, and :func:`protocol_kind` tells a file's kind.
"""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from petctiqa.errors import ProtocolError


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
        if not _is_finite_number(value):
            raise self.error(key, f"must be a finite number, got {value!r}")
        self._check_range(key, value, low, high)
        return float(value)

    def number_list(
        self,
        key: str,
        length: int | None,
        low: float | None = None,
        high: float | None = None,
    ) -> tuple[float, ...]:
        """A list of ``length`` finite numbers (``None``: one or more)."""
        value = self._get(key, None, True)
        if not isinstance(value, list) or (
            len(value) != length if length is not None else not value
        ):
            wanted = f"{length}" if length is not None else "one or more"
            raise self.error(key, f"must be a list of {wanted} numbers, got {value!r}")
        for item in value:
            if not _is_finite_number(item):
                raise self.error(key, f"must hold finite numbers only, got {item!r}")
            self._check_range(key, item, low, high)
        return tuple(float(v) for v in value)

    def table_list(self, key: str) -> list[TomlTable]:
        """An array of tables (``[[key]]``), each as a :class:`TomlTable` named ``key[n]``."""
        value = self._get(key, None, True)
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            raise self.error(key, f"must be a non-empty array of tables ([[{key}]]), got {value!r}")
        return [
            TomlTable(item, self._source, f"{self._field(key)}[{n}].")
            for n, item in enumerate(value)
        ]

    def has(self, key: str) -> bool:
        return key in self._data

    def raw(self) -> dict[str, Any]:
        """The table's own values, unchecked (for plug-in settings the plug-in checks)."""
        self._seen.update(self._data)
        return dict(self._data)

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


def _is_finite_number(value: object) -> bool:
    """An int or float (not a bool, which TOML keeps apart but Python counts as int) that is
    neither NaN nor infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
