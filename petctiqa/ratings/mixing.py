"""Simulated and real raters are never averaged silently.

A study (or a long CSV with a ``simulated`` column) that holds ratings of simulated AND real
raters is refused by export and aggregation unless the caller chooses a policy:
``refuse`` (default), ``exclude`` (the real raters only) or ``include`` (mix them on purpose;
every output is then labelled SIMULATED, starting with :data:`SIMULATED_BANNER`).
"""

from __future__ import annotations

from collections.abc import Sequence

# The banner is defined once, with the dataset folder's other names; exports take it from here.
from petctiqa.dataset.folder import SIMULATED_BANNER as SIMULATED_BANNER
from petctiqa.errors import RatingError
from petctiqa.ratings.store import Rating

SIMULATED_MODES = ("refuse", "include", "exclude")
"""What export/aggregate do when simulated and real raters are both present."""


def _names(items: Sequence[str]) -> str:
    return ", ".join(items[:5]) + (f" (+{len(items) - 5})" if len(items) > 5 else "")


class MixedRatersError(RatingError):
    """Simulated and real raters in one set of ratings, and the policy is ``refuse``.

    ``fact`` states what was found; the message adds the library's two ways out."""

    def __init__(self, where: str, simulated: Sequence[str], real: Sequence[str]) -> None:
        self.where = where
        self.simulated = tuple(simulated)
        self.real = tuple(real)
        self.fact = (
            f"{where}: refusing to average SIMULATED raters ({_names(simulated)}) with real "
            f"raters ({_names(real)}) into one MOS"
        )
        super().__init__(
            f"{self.fact}; simulated='exclude' keeps the real raters only, simulated='include' "
            "mixes them on purpose (every output is then labelled SIMULATED)"
        )


def check_mode(mode: str) -> str:
    if mode not in SIMULATED_MODES:
        raise RatingError(f"simulated must be one of {', '.join(SIMULATED_MODES)}, not {mode!r}")
    return mode


def select_simulated(ratings: list[Rating], mode: str, where: str) -> list[Rating]:
    """Apply the policy ``mode`` to a study's ratings (see the module docstring)."""
    check_mode(mode)
    sim = sorted({r.rater for r in ratings if r.simulated})
    real = sorted({r.rater for r in ratings if not r.simulated})
    if mode == "exclude":
        kept = [r for r in ratings if not r.simulated]
        if not kept and ratings:
            raise RatingError(f"{where}: only simulated ratings; nothing left to export")
        return kept
    if sim and real and mode == "refuse":
        raise MixedRatersError(where, sim, real)
    return ratings
