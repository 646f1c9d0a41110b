"""The append-only journal beside an archive-scoring output: what is scored survives a kill.

``OUT.journal/`` holds ``settings.json`` (what the scores depend on: checkpoint hash, render
and preprocessing settings, slice stride) and one ``part-<rank>.jsonl`` per process. Each line
is one scored row (``{"unit", "key", "pos", "source", "score", "s", "w", "error"}``) or a unit's
end (``{"unit", "done": n}``). Lines are flushed as written and fsynced every
:data:`SYNC_EVERY` lines and at the end; a line cut by a kill is dropped on reading, and the
file is cut back to its last whole line before anything is appended to it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petctiqa.atomic import atomic_write_text
from petctiqa.errors import DatasetError

SYNC_EVERY = 32


def journal_dir(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".journal")


@dataclass
class JournalState:
    """What earlier runs scored: rows by unit key and the units that were finished."""

    rows: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """unit key -> row key -> row."""
    done: set[str] = field(default_factory=set)

    def row_keys(self, unit: str) -> set[str]:
        return set(self.rows.get(unit, {}))


def check_settings(folder: Path, settings: dict[str, Any]) -> None:
    """Create ``folder`` with ``settings``, or refuse a journal written with other settings."""
    path = folder / "settings.json"
    wanted = json.loads(json.dumps(settings))
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: unreadable journal settings ({exc})") from None
        if stored != wanted:
            changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            raise DatasetError(
                f"{folder}: journal of an earlier run with other settings "
                f"({', '.join(changed)}); its scores cannot be reused"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(wanted, indent=1, sort_keys=True) + "\n")


def read_journal(folder: Path) -> JournalState:
    """Every whole line of every part file (the first row for a key wins)."""
    state = JournalState()
    for part in sorted(Path(folder).glob("part-*.jsonl")):
        with open(part, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # cut by a kill
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                unit = line.get("unit")
                if not isinstance(unit, str):
                    continue
                if "done" in line:
                    state.done.add(unit)
                elif isinstance(line.get("key"), str):
                    state.rows.setdefault(unit, {}).setdefault(line["key"], line)
    return state


class JournalWriter:
    """Appends lines to one part file (see the module docstring)."""

    def __init__(self, folder: Path, rank: int) -> None:
        self.path = Path(folder) / f"part-{rank}.jsonl"
        _cut_to_last_line(self.path)
        self.handle = open(self.path, "ab")  # noqa: SIM115 - kept open across appends
        self.unsynced = 0

    def append(self, line: dict[str, Any]) -> None:
        self.handle.write(json.dumps(line, allow_nan=True).encode() + b"\n")
        self.handle.flush()
        self.unsynced += 1
        if self.unsynced >= SYNC_EVERY:
            self.sync()

    def sync(self) -> None:
        os.fsync(self.handle.fileno())
        self.unsynced = 0

    def close(self) -> None:
        self.sync()
        self.handle.close()


def _cut_to_last_line(path: Path) -> None:
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
