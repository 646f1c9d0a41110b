"""``extends``: a protocol file that states only its differences from another protocol.

A file with a top-level ``extends = "pet-ct-iqa-ds"`` (a shipped name, or a path relative to
the file) takes every field it does not set from that protocol. Tables merge key by key; lists
are replaced whole. Two exceptions keep the meaning obvious:

- ``[protocol]`` (name, description, version) is never inherited: each file names itself;
- the distortion grid is one thing: a file that gives ``distortions.axes`` drops the inherited
  classic tables (``poisson``, ``gaussian``, ``jpeg``) and vice versa.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from petctiqa.errors import ProtocolError

MAX_DEPTH = 8
CLASSIC_TABLES = ("poisson", "gaussian", "jpeg")


def base_reference(extends: Any, source: str) -> str | Path:
    """What ``extends`` points at: a shipped name, or a path (relative to the extending file)."""
    if not isinstance(extends, str) or not extends.strip():
        raise ProtocolError(
            f"{source}: field 'extends' must be a protocol name or path, got {extends!r}"
        )
    looks_like_path = extends.endswith(".toml") or "/" in extends
    if looks_like_path and not source.startswith("package:"):
        candidate = Path(extends)
        if not candidate.is_absolute():
            candidate = Path(source).parent / candidate
        return candidate
    return extends


def check_chain(chain: tuple[str, ...], source: str) -> None:
    """Refuse a cycle (a extends b extends a) or a chain deeper than :data:`MAX_DEPTH`."""
    if source in chain:
        loop = " -> ".join((*chain, source))
        raise ProtocolError(f"{chain[0]}: field 'extends' makes a cycle ({loop})")
    if len(chain) >= MAX_DEPTH:
        raise ProtocolError(f"{chain[0]}: field 'extends' chain is deeper than {MAX_DEPTH}")


def merge_protocol_data(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base`` by the rules in the module docstring (neither is modified)."""
    merged = copy.deepcopy({k: v for k, v in base.items() if k not in ("protocol", "extends")})
    child_distortions = child.get("distortions")
    base_distortions = merged.get("distortions")
    if isinstance(child_distortions, dict) and isinstance(base_distortions, dict):
        if "axes" in child_distortions:
            for name in CLASSIC_TABLES:
                base_distortions.pop(name, None)
        elif any(name in child_distortions for name in CLASSIC_TABLES):
            base_distortions.pop("axes", None)
    _merge_into(merged, child)
    return merged


def _merge_into(target: dict[str, Any], overlay: dict[str, Any]) -> None:
    for key, value in overlay.items():
        if key == "extends":
            continue
        if isinstance(value, dict) and isinstance(target.get(key), dict) and key != "protocol":
            _merge_into(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
