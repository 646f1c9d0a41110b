"""The rating-scale protocol (``protocols/likert-0-4.toml``): score range, labels, instructions
and session settings (break reminder, training block), validated field by field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petctiqa.protocol_toml import TomlTable, resolve_protocol_path

DEFAULT_SCALE = "likert-0-4"


@dataclass(frozen=True)
class RatingScale:
    """An integer category scale ``min..max`` with one label per score."""

    name: str
    description: str
    min: int
    max: int
    labels: tuple[str, ...]
    instructions: str
    break_every: int
    """Show a break reminder after this many ratings (0 = never)."""
    training: bool
    training_slices: int
    source: str = "<built-in>"

    @property
    def scores(self) -> tuple[int, ...]:
        return tuple(range(self.min, self.max + 1))


class _ScaleTable(TomlTable):
    def string_list(self, key: str, length: int) -> tuple[str, ...]:
        value = self._get(key, None, True)
        if (
            not isinstance(value, list)
            or len(value) != length
            or not all(isinstance(v, str) and v.strip() for v in value)
        ):
            raise self.error(key, f"must be a list of {length} non-empty strings, got {value!r}")
        return tuple(value)

    def table(self, key: str, required: bool = True) -> _ScaleTable:
        base = super().table(key, required)
        return _ScaleTable(base._data, base._source, base._prefix)


def parse_rating_scale(data: dict[str, Any], source: str) -> RatingScale:
    """Validate a parsed scale TOML document."""
    root = _ScaleTable(data, source)
    head = root.table("scale")
    name = head.string("name")
    head.integer("version", 1, low=1, high=1)
    description = head.string("description", "")
    low = head.integer("min", low=-100, high=100)
    high = head.integer("max", low=-100, high=100)
    if high <= low:
        raise head.error("max", f"must be greater than min ({low}), got {high}")
    if high - low > 9:
        raise head.error("max", f"scale must have at most 10 categories (keys 0-9), got {high}")
    labels = head.string_list("labels", high - low + 1)
    instructions = head.string("instructions", "").strip()
    head.finish()
    ses = root.table("session", required=False)
    break_every = ses.integer("break_every", 100, low=0)
    training = ses.boolean("training", True)
    training_slices = ses.integer("training_slices", 2, low=0, high=50)
    ses.finish()
    root.finish()
    return RatingScale(
        name=name,
        description=description,
        min=low,
        max=high,
        labels=labels,
        instructions=instructions,
        break_every=break_every,
        training=training,
        training_slices=training_slices,
        source=source,
    )


def load_rating_scale(name_or_path: str | Path = DEFAULT_SCALE) -> RatingScale:
    """Load a rating scale by shipped name (``likert-0-4``) or TOML path."""
    data, source = resolve_protocol_path(name_or_path)
    return parse_rating_scale(data, source)
