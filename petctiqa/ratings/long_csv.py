"""Long rating tables (one row per stimulus, rater and score) for ``collect-ratings
aggregate``: any study's scores, e.g. SUREAL's NFLX files or an exported ``ratings_raw.csv``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from petctiqa.errors import RatingError
from petctiqa.ratings.aggregate import ScoreMatrix, score_matrix
from petctiqa.ratings.mixing import MixedRatersError, check_mode


def _read_frame(path: Path) -> tuple[pd.DataFrame, str, pd.Series]:
    """The table, the name of its stimulus column and its scores (every one a number)."""
    try:
        frame = pd.read_csv(path, comment="#", dtype={"rater": str})
    except FileNotFoundError:
        raise RatingError(f"{path}: file not found") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise RatingError(f"{path}: not a readable CSV ({exc})") from None
    stim_col = "stimulus" if "stimulus" in frame.columns else "image"
    missing = [c for c in (stim_col, "rater", "score") if c not in frame.columns]
    if missing:
        raise RatingError(
            f"{path}: missing column(s) {', '.join(missing)} (need stimulus, rater, score)"
        )
    scores = pd.to_numeric(frame["score"], errors="coerce")
    bad = scores.isna()
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise RatingError(
            f"{path}: line {line}: score {frame['score'].iloc[line - 2]!r} is not a number"
        )
    return frame, stim_col, scores


def _content(
    frame: pd.DataFrame, stimuli: pd.Series, column: str | None, pattern: str | None, path: Path
) -> pd.Series | None:
    """Each stimulus's content (source) for the MLE ambiguity term, or None (one content)."""
    if column:
        if column not in frame.columns:
            raise RatingError(f"{path}: content column {column!r} not found")
        return frame[column].astype(str)
    if not pattern:
        return None
    try:
        extracted = stimuli.str.extract(pattern, expand=False)
    except (re.error, ValueError) as exc:
        raise RatingError(f"content pattern {pattern!r} is invalid ({exc})") from None
    if isinstance(extracted, pd.DataFrame):
        extracted = extracted.iloc[:, 0]
    if extracted.isna().any():
        first = stimuli[extracted.isna()].iloc[0]
        raise RatingError(f"content pattern {pattern!r} does not match {first!r}")
    return extracted


def read_long_ratings(
    path: Path,
    content_column: str | None = None,
    content_pattern: str | None = None,
    simulated: str = "refuse",
) -> tuple[ScoreMatrix, dict[str, bool]]:
    """Read a long CSV (columns stimulus or image, rater, score; optional ``simulated``) into
    a :class:`ScoreMatrix` and {rater: simulated}.

    The content (source) of each stimulus for the MLE ambiguity term comes from
    ``content_column`` or from the first group of the regular expression ``content_pattern``
    applied to the stimulus name (e.g. ``^([^_]+)_`` for SUREAL's NFLX names); otherwise all
    stimuli share one content. A rater is simulated when any of their rows says
    ``simulated = true`` (as in ``ratings_raw.csv``); ``simulated`` is the policy for a file
    with simulated and real raters (:mod:`petctiqa.ratings.mixing`).
    """
    check_mode(simulated)
    frame, stim_col, scores = _read_frame(path)
    sim_rows = np.zeros(len(frame), dtype=bool)
    if "simulated" in frame.columns:
        flags = frame["simulated"].astype(str).str.strip().str.lower()
        sim_rows = flags.isin(["true", "1", "yes"]).to_numpy()
    raters = frame["rater"].astype(str)
    sim_raters = set(raters[sim_rows])
    real_raters = set(raters) - sim_raters
    if sim_raters and real_raters:
        if simulated == "refuse":
            raise MixedRatersError(str(path), sorted(sim_raters), sorted(real_raters))
        if simulated == "exclude":
            keep = ~raters.isin(sim_raters).to_numpy()
            frame, scores, raters = frame[keep], scores[keep], raters[keep]
            sim_raters = set()
    elif sim_raters and simulated == "exclude":
        raise RatingError(f"{path}: only simulated ratings; nothing left to aggregate")
    stimuli = frame[stim_col].astype(str)
    content = _content(frame, stimuli, content_column, content_pattern, path)
    try:
        matrix = score_matrix(stimuli, raters, scores, content)
    except RatingError as exc:
        raise RatingError(f"{path}: {exc}") from None
    return matrix, {r: r in sim_raters for r in matrix.raters}
