"""Rating sheets in and out: per-rater CSV/XLSX import (validated, all or nothing), long CSV
reading for ``aggregate``, and the study exports (raw ratings, mos.csv, rater report, agreement).

Every exported CSV of a study that holds any simulated rating starts with a line
``# SIMULATED ratings ...`` and has a ``simulated`` column (read with
``pandas.read_csv(path, comment="#")``).
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from petctiqa.atomic import atomic_write_text
from petctiqa.errors import RatingError
from petctiqa.ratings.aggregate import (
    Aggregation,
    ScoreMatrix,
    aggregate,
    check_scale,
    score_matrix,
)
from petctiqa.ratings.store import Rating, RatingStore, check_rater_id, utc_now
from petctiqa.ratings.study_images import StudyImage

SIMULATED_BANNER = (
    "# SIMULATED ratings: this file contains scores from simulated raters "
    "(petctiqa collect-ratings simulate), not from a reader study"
)
SHEET_IMAGE_COLUMNS = ("image", "image_id", "stimulus")
SIMULATED_MODES = ("refuse", "include", "exclude")
"""What export/aggregate do when simulated and real raters are both present."""


class StudyWarning(UserWarning):
    """Something in an export the user should know about (e.g. images without ratings)."""


# ----------------------------------------------------------------------------- import


@dataclass(frozen=True)
class SheetProblem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class SheetCheck:
    """Validation result of one sheet: the ratings it would add, or its problems."""

    file: str
    rater: str
    ratings: tuple[Rating, ...]
    problems: tuple[SheetProblem, ...]

    def with_problem(self, message: str) -> SheetCheck:
        """This check with one more problem about the whole sheet (no line number)."""
        return replace(self, problems=(*self.problems, SheetProblem(self.file, None, message)))


_PLAIN_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_PLAIN_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


class UncachedFormula(str):
    """A formula cell saved without its computed value (the text is the formula); its value
    is unknown, so it is reported rather than read as empty."""


def _xlsx_cell_text(value: object) -> str:
    """A cell's value as the text a CSV would hold (3.0 stored as a number reads as ``3``)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _load_xlsx(path: Path, data_only: bool):  # noqa: ANN202 - openpyxl workbook
    from openpyxl import load_workbook

    try:
        return load_workbook(path, read_only=True, data_only=data_only)
    except Exception as exc:  # openpyxl raises many types for a bad file
        raise RatingError(f"{path}: not a readable XLSX workbook ({exc})") from None


def _uncached_formulas(path: Path, rows: list[tuple[int, list[str]]]) -> None:
    """Mark, in place, the empty cells of ``rows`` that are formulas saved without a cached
    value (a program that writes XLSX without computing it, e.g. openpyxl)."""
    empty = {number: cells for number, cells in rows if "" in cells}
    if not empty:
        return
    book = _load_xlsx(path, data_only=False)
    for number, values in enumerate(book.worksheets[0].iter_rows(values_only=True), start=1):
        cells = empty.get(number)
        if cells is None:
            continue
        for i, value in enumerate(values[: len(cells)]):
            if cells[i] == "" and isinstance(value, str) and value.startswith("="):
                cells[i] = UncachedFormula(value)
    book.close()


def _read_sheet_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) rows of a CSV or XLSX sheet (first worksheet)."""
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        book = _load_xlsx(path, data_only=True)
        rows = []
        header: list[str] = []
        for number, values in enumerate(book.worksheets[0].iter_rows(values_only=True), start=1):
            cells = [_xlsx_cell_text(v) for v in values]
            if number == 1:
                header = [c.lower() for c in cells]
            elif any(cells):
                rows.append((number, cells))
        book.close()
        _uncached_formulas(path, rows)
        return header, rows
    if suffix in (".csv", ".txt"):
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise RatingError(f"{path}: cannot read sheet ({exc})") from None
        reader = csv.reader(io.StringIO(text))
        rows = []
        header = []
        for number, cells in enumerate(reader, start=1):
            cells = [c.strip() for c in cells]
            if number == 1:
                header = [c.lower() for c in cells]
            elif any(cells):
                rows.append((number, cells))
        return header, rows
    raise RatingError(f"{path}: unsupported sheet type {suffix!r} (use .csv or .xlsx)")


def check_sheet(
    path: Path,
    images: Sequence[StudyImage],
    already_rated: dict[str, set[str]],
    scale_min: int = 0,
    scale_max: int = 4,
    rater: str | None = None,
    allow_missing: bool = False,
) -> SheetCheck:
    """Validate one per-rater sheet (columns ``image`` or ``image_id``, ``score``, optional
    ``rater``; rater defaults to the file name stem). Problems: unknown image, duplicate image,
    score not an integer in range, images of the study missing from the sheet, images the rater
    already has in the database, more than one rater in one sheet."""
    name = str(path)
    header, rows = _read_sheet_rows(path)
    problems: list[SheetProblem] = []
    image_col = next((header.index(c) for c in SHEET_IMAGE_COLUMNS if c in header), None)
    if image_col is None or "score" not in header:
        return SheetCheck(
            name, rater or path.stem, (), (SheetProblem(name, 1, "needs columns image and score"),)
        )
    score_col = header.index("score")
    rater_col = header.index("rater") if "rater" in header else None
    by_path = {im.image: im.image for im in images}
    by_id = {im.image_id: im.image for im in images}
    sheet_rater = rater
    seen: dict[str, int] = {}
    ratings: list[Rating] = []
    now = utc_now()
    for line, cells in rows:
        cells = cells + [""] * (len(header) - len(cells))
        key = cells[image_col].replace("\\", "/")
        row_rater = cells[rater_col] if rater_col is not None else None
        if row_rater:
            if sheet_rater is None:
                sheet_rater = row_rater
            elif row_rater != sheet_rater:
                problems.append(
                    SheetProblem(name, line, f"rater {row_rater!r} differs from {sheet_rater!r}")
                )
                continue
        formula = next((c for c in cells if isinstance(c, UncachedFormula)), None)
        if formula is not None:
            problems.append(
                SheetProblem(
                    name,
                    line,
                    f"cell {formula!r} is a formula without a cached value (the file was saved "
                    "by a program that does not compute formulas; open and save it in a "
                    "spreadsheet program, or paste the values)",
                )
            )
            continue
        image = by_path.get(key) or by_id.get(key) or by_id.get(Path(key).stem)
        if not key:
            problems.append(SheetProblem(name, line, "image is empty"))
            continue
        if image is None:
            problems.append(SheetProblem(name, line, f"unknown image {key!r}"))
            continue
        if image in seen:
            problems.append(
                SheetProblem(name, line, f"duplicate image {key!r} (first on line {seen[image]})")
            )
            continue
        seen[image] = line
        text = cells[score_col]
        # plain ASCII digits only: float() would read '0_4' as 4 and an Arabic-Indic digit as 3
        if not _PLAIN_INTEGER.fullmatch(text) and not _PLAIN_NUMBER.fullmatch(text):
            problems.append(
                SheetProblem(name, line, f"score {text!r} is not a number (digits 0-9)")
            )
            continue
        # (a long digit string is off the scale anyway; int() refuses > 4300 digits)
        value = int(text) if _PLAIN_INTEGER.fullmatch(text) and len(text) < 20 else None
        if value is None or not scale_min <= value <= scale_max:
            problems.append(
                SheetProblem(
                    name, line, f"score {text!r} is not an integer {scale_min}..{scale_max}"
                )
            )
            continue
        ratings.append(Rating("", image, value, None, now, "import", False))
    sheet_rater = sheet_rater or path.stem
    try:
        check_rater_id(sheet_rater)
    except RatingError as exc:
        problems.append(SheetProblem(name, None, str(exc)))
    missing = [im.image for im in images if im.image not in seen]
    if missing and not allow_missing:
        problems.append(
            SheetProblem(
                name, None, f"missing {len(missing)} of {len(images)} images (first: {missing[0]})"
            )
        )
    clash = sorted(already_rated.get(sheet_rater, set()) & set(seen))
    if clash:
        problems.append(
            SheetProblem(
                name,
                seen[clash[0]],
                f"rater {sheet_rater!r} already has {len(clash)} of these images in the "
                f"database (first: {clash[0]})",
            )
        )
    ratings = [
        Rating(sheet_rater, r.image, r.score, r.position, r.rated_at, r.source, False)
        for r in ratings
    ]
    return SheetCheck(name, sheet_rater, tuple(ratings), tuple(problems))


def import_sheets(
    store: RatingStore,
    paths: Sequence[Path],
    images: Sequence[StudyImage],
    allow_missing: bool = False,
) -> tuple[list[SheetCheck], int]:
    """Validate every sheet; import all of them in one transaction only if none has a problem.

    Returns (checks, number of ratings imported); 0 imported when any sheet has problems.
    """
    already: dict[str, set[str]] = {}
    for r in store.ratings():
        already.setdefault(r.rater, set()).add(r.image)
    checks = []
    raters_seen: dict[str, str] = {}
    for path in paths:
        check = check_sheet(
            Path(path), images, already, store.scale_min, store.scale_max, None, allow_missing
        )
        if check.rater in raters_seen and not check.problems:
            check = check.with_problem(f"rater {check.rater!r} also in {raters_seen[check.rater]}")
        existing = store.rater(check.rater)
        if existing is not None and existing.simulated:
            check = check.with_problem(
                f"rater {check.rater!r} is a simulated rater in this study; a real "
                "sheet cannot use that name (rename the rater)"
            )
        raters_seen.setdefault(check.rater, check.file)
        checks.append(check)
    if any(c.problems for c in checks):
        return checks, 0
    # new raters and all ratings in ONE transaction: nothing is written unless all of it is
    new_raters = [c.rater for c in checks if store.rater(c.rater) is None]
    count = store.add_raters_with_ratings(new_raters, [r for c in checks for r in c.ratings])
    return checks, count


# ----------------------------------------------------------------------------- long CSV


def read_long_csv(
    path: Path,
    content_column: str | None = None,
    content_pattern: str | None = None,
    simulated: str = "refuse",
) -> ScoreMatrix:
    """Read a long CSV (columns stimulus or image, rater, score) into a :class:`ScoreMatrix`
    (see :func:`read_long_ratings`)."""
    return read_long_ratings(path, content_column, content_pattern, simulated)[0]


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
    with simulated and real raters, as in :func:`export_study`.
    """
    if simulated not in SIMULATED_MODES:
        raise RatingError(
            f"simulated must be one of {', '.join(SIMULATED_MODES)}, not {simulated!r}"
        )
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
    sim_rows = np.zeros(len(frame), dtype=bool)
    if "simulated" in frame.columns:
        flags = frame["simulated"].astype(str).str.strip().str.lower()
        sim_rows = flags.isin(["true", "1", "yes"]).to_numpy()
    raters = frame["rater"].astype(str)
    sim_raters = set(raters[sim_rows])
    real_raters = set(raters) - sim_raters
    if sim_raters and real_raters:
        if simulated == "refuse":
            raise RatingError(_mixed_message(str(path), sorted(sim_raters), sorted(real_raters)))
        if simulated == "exclude":
            keep = ~raters.isin(sim_raters).to_numpy()
            frame, scores, raters = frame[keep], scores[keep], raters[keep]
            sim_raters = set()
    elif sim_raters and simulated == "exclude":
        raise RatingError(f"{path}: only simulated ratings; nothing left to aggregate")
    stimuli = frame[stim_col].astype(str)
    content = None
    if content_column:
        if content_column not in frame.columns:
            raise RatingError(f"{path}: content column {content_column!r} not found")
        content = frame[content_column].astype(str)
    elif content_pattern:
        try:
            extracted = stimuli.str.extract(content_pattern, expand=False)
        except (re.error, ValueError) as exc:
            raise RatingError(f"content pattern {content_pattern!r} is invalid ({exc})") from None
        if isinstance(extracted, pd.DataFrame):
            extracted = extracted.iloc[:, 0]
        if extracted.isna().any():
            first = stimuli[extracted.isna()].iloc[0]
            raise RatingError(f"content pattern {content_pattern!r} does not match {first!r}")
        content = extracted
    try:
        matrix = score_matrix(stimuli, raters, scores, content)
    except RatingError as exc:
        raise RatingError(f"{path}: {exc}") from None
    return matrix, {r: r in sim_raters for r in matrix.raters}


# ----------------------------------------------------------------------------- writing


def _frame_to_csv(frame: pd.DataFrame, path: Path, simulated: bool) -> None:
    body = frame.to_csv(index=False, lineterminator="\n", float_format="%.6f")
    atomic_write_text(path, (SIMULATED_BANNER + "\n" if simulated else "") + body)


def stimulus_table(result: Aggregation) -> pd.DataFrame:
    """Per-stimulus results: mos, std, n, CI, bt500_mos and MLE quality (when fitted)."""
    st = result.stats
    table = pd.DataFrame(
        {
            "stimulus": list(result.matrix.stimuli),
            "mos": st.mos,
            "std": st.std,
            "n": st.n,
            "ci95_low": st.ci_low,
            "ci95_high": st.ci_high,
            "ci95_halfwidth": st.ci_half,
            "bt500_mos": result.bt500_mos,
        }
    )
    if result.mle is not None:
        table["mle_quality"] = result.mle.quality
        table["mle_quality_std"] = result.mle.quality_std
    return table


def rater_table(result: Aggregation, simulated: dict[str, bool] | None = None) -> pd.DataFrame:
    """Per-rater report: counts, mean score, BT.500 P/Q/decision/reason, MLE bias/inconsistency."""
    m = result.matrix
    bt = result.bt500
    mask = ~np.isnan(m.scores)
    table = pd.DataFrame(
        {
            "rater": list(m.raters),
            "n_ratings": mask.sum(axis=0),
            "mean_score": np.nanmean(m.scores, axis=0),
            "bt500_p": bt.p.astype(int),
            "bt500_q": bt.q.astype(int),
            "bt500_rejected": bt.rejected.astype(int),
            "bt500_reason": [bt.reason(i) for i in range(len(m.raters))],
        }
    )
    if result.mle is not None:
        table["mle_bias"] = result.mle.bias
        table["mle_inconsistency"] = result.mle.inconsistency
    if simulated is not None:
        table["simulated"] = [str(bool(simulated.get(r, False))).lower() for r in m.raters]
    return table


def agreement_summary(result: Aggregation) -> dict[str, object]:
    icc = result.icc
    return {
        "stimuli": len(result.matrix.stimuli),
        "raters": len(result.matrix.raters),
        "ratings": int((~np.isnan(result.matrix.scores)).sum()),
        "icc": None
        if icc is None
        else {
            "icc2_1_absolute_agreement_single": icc.icc2_1,
            "icc2_k_absolute_agreement_mean": icc.icc2_k,
            "icc3_1_consistency_single": icc.icc3_1,
            "icc3_k_consistency_mean": icc.icc3_k,
            "complete_stimuli": icc.n_stimuli,
            "k_raters": icc.k_raters,
        },
        "krippendorff_alpha_interval": result.alpha_interval,
        "krippendorff_alpha_ordinal": result.alpha_ordinal,
        "bt500_rejected": [
            r for r, x in zip(result.matrix.raters, result.bt500.rejected, strict=True) if x
        ],
        "bt500_unanimous_stimuli": result.bt500.unanimous_stimuli,
        "ci_method": result.stats.ci_method,
        "screened": result.screened,
        "zscored": result.zscored,
        "mle_method": None if result.mle is None else result.mle.method,
        "mle_iterations": None if result.mle is None else result.mle.iterations,
        "mle_converged": None if result.mle is None else result.mle.converged,
        "mle_problems": None if result.mle is None else list(result.mle.problems),
    }


SIMULATED_FIGURE_TITLE = "SIMULATED ratings (simulated raters, not a reader study)"


def write_agreement_figure(result: Aggregation, path: Path, simulated: bool = False) -> None:
    """PNG: each rater's scores against the MOS of the others, plus MLE bias/inconsistency.

    ``simulated``: the figure gets a red title :data:`SIMULATED_FIGURE_TITLE` (also stored as
    the PNG's Title text chunk), so a simulated study cannot be mistaken for a real one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = result.matrix
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    x = m.scores
    for s, name in enumerate(m.raters[:12]):
        others = np.nanmean(np.delete(x, s, axis=1), axis=1) if x.shape[1] > 1 else x[:, s]
        ok = ~np.isnan(x[:, s])
        jitter = (np.arange(ok.sum()) % 7 - 3) * 0.02
        axes[0].scatter(others[ok], x[ok, s] + jitter, s=6, alpha=0.4, label=name)
    axes[0].set_xlabel("MOS of the other raters")
    axes[0].set_ylabel("rater score")
    axes[0].set_title(
        "Agreement (ICC(2,1) = %s)" % ("n/a" if result.icc is None else f"{result.icc.icc2_1:.3f}")
    )
    if len(m.raters) <= 12:
        axes[0].legend(fontsize=7, markerscale=2)
    if result.mle is not None:
        axes[1].errorbar(
            result.mle.bias, np.arange(len(m.raters)), xerr=1.96 * result.mle.bias_std, fmt="o"
        )
        axes[1].scatter(result.mle.inconsistency, np.arange(len(m.raters)), marker="x", color="C3")
        axes[1].set_yticks(np.arange(len(m.raters)), list(m.raters), fontsize=7)
        axes[1].axvline(0, color="grey", lw=0.5)
        axes[1].set_xlabel("MLE bias (o, 95% CI) and inconsistency (x), score units")
    if result.mle is not None and not result.mle.converged:
        axes[1].set_title("MLE NOT converged: do not use", color="C3", fontsize=9)
    title = "Rater agreement"
    if simulated:
        title = SIMULATED_FIGURE_TITLE
        fig.suptitle(title, color="red", fontsize=13, fontweight="bold")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Title": title})
    plt.close(fig)
    from petctiqa.atomic import atomic_write_bytes

    atomic_write_bytes(path, buffer.getvalue())


def write_aggregation(
    result: Aggregation,
    out: Path,
    simulated_raters: dict[str, bool] | None = None,
    figure: bool = True,
) -> dict[str, Path]:
    """Write ``stimulus_mos.csv``, ``rater_report.csv``, ``agreement.json`` (and
    ``agreement.png``) for any aggregation; returns the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    simulated = bool(simulated_raters) and any(simulated_raters.values())
    paths = {
        "stimulus_mos": out / "stimulus_mos.csv",
        "rater_report": out / "rater_report.csv",
        "agreement": out / "agreement.json",
    }
    _frame_to_csv(stimulus_table(result), paths["stimulus_mos"], simulated)
    _frame_to_csv(rater_table(result, simulated_raters), paths["rater_report"], simulated)
    summary = agreement_summary(result)
    summary["simulated"] = simulated
    atomic_write_text(paths["agreement"], json.dumps(summary, indent=2) + "\n")
    if figure:
        paths["figure"] = out / "agreement.png"
        write_agreement_figure(result, paths["figure"], simulated)
    return paths


def export_study(
    store: RatingStore,
    dataset: Path,
    images: Sequence[StudyImage],
    out: Path,
    *,
    ci: str = "t",
    screening: bool = False,
    zscore: bool = False,
    mle: bool = True,
    mle_method: str = "reml",
    figure: bool = True,
    bt500_skip_unanimous: bool = False,
    simulated: str = "refuse",
) -> dict[str, Path]:
    """Export a study: ``ratings_raw.csv`` (long), ``mos.csv`` (the training CSV: one row per
    manifest image with mos/std/n/CI, manifest patient/slice/levels, split, simulated), plus the
    rater report and agreement files of :func:`write_aggregation`.

    ``simulated``: what to do when the study holds ratings of simulated AND real raters --
    ``refuse`` (default: :class:`RatingError`, a MOS must not average the two), ``include``
    (mix them; every file is labelled SIMULATED) or ``exclude`` (export the real raters only).
    Images without ratings get n = 0 and empty statistics (a :class:`StudyWarning` says how
    many). Raises if nothing was rated.
    """
    ratings = _select_simulated(store.ratings(), simulated, str(store.path))
    if not ratings:
        raise RatingError(f"{store.path}: no ratings to export")
    simulated_raters = {r.rater: r.simulated for r in store.raters()}
    simulated_raters = {r.rater: simulated_raters.get(r.rater, r.simulated) for r in ratings}
    any_sim = any(r.simulated for r in ratings)
    info = {im.image: im for im in images}
    raw = pd.DataFrame(
        {
            "image": [r.image for r in ratings],
            "image_id": [info[r.image].image_id if r.image in info else "" for r in ratings],
            "rater": [r.rater for r in ratings],
            "score": [r.score for r in ratings],
            "position": pd.array([r.position for r in ratings], dtype="Int64"),
            "rated_at": [r.rated_at for r in ratings],
            "source": [r.source for r in ratings],
            "simulated": [str(bool(r.simulated)).lower() for r in ratings],
        }
    )
    rated = set(raw["image"])
    rated_images = [im.image for im in images if im.image in rated]
    unrated = len(images) - len(rated_images)
    if unrated:
        warnings.warn(
            f"{unrated} of {len(images)} images have no ratings yet; their mos.csv rows have "
            "n = 0 and empty statistics",
            StudyWarning,
            stacklevel=2,
        )
    matrix = score_matrix(
        raw["image"],
        raw["rater"],
        raw["score"].astype(float),
        content=[info[i].slice_id if i in info else i for i in raw["image"]],
        stimulus_order=rated_images,
    )
    check_scale(matrix, store.scale_min, store.scale_max)
    result = aggregate(
        matrix,
        ci=ci,
        screening=screening,
        zscore=zscore,
        mle=mle,
        mle_method=mle_method,
        bt500_skip_unanimous=bt500_skip_unanimous,
    )
    out.mkdir(parents=True, exist_ok=True)
    paths = write_aggregation(result, out, simulated_raters, figure=figure)
    raw_path = out / "ratings_raw.csv"
    _frame_to_csv(raw, raw_path, any_sim)
    paths["ratings_raw"] = raw_path

    stat_columns = ["mos", "std", "n", "ci95_low", "ci95_high", "bt500_mos"]
    if mle:
        stat_columns += ["mle_quality", "mle_quality_std"]
    per_stim = stimulus_table(result).rename(columns={"stimulus": "image"})
    sim_images = set(raw.loc[raw["simulated"] == "true", "image"])
    base = pd.DataFrame(
        {"image": [im.image for im in images], "image_id": [im.image_id for im in images]}
    )
    mos = base.merge(per_stim[["image", *stat_columns]], on="image", how="left")
    mos["n"] = mos["n"].fillna(0).astype(int)
    for name in ("patient_id", "slice_id", "poisson_level", "gaussian_level", "jpeg_level"):
        mos[name] = [getattr(im, name) for im in images]
    mos["split"] = [im.split for im in images]
    mos["simulated"] = [str(im.image in sim_images).lower() for im in images]
    manifest = pd.read_csv(dataset / "manifest.csv", dtype=str)
    extra = [
        c
        for c in ("slice_number", "reference", "poisson_value", "gaussian_sigma", "jpeg_quality")
        if c in manifest.columns
    ]
    if extra:
        mos = mos.merge(manifest[["image", *extra]], on="image", how="left")
    mos_path = out / "mos.csv"
    _frame_to_csv(mos, mos_path, any_sim)
    paths["mos"] = mos_path
    return paths


def _select_simulated(ratings: list[Rating], mode: str, where: str) -> list[Rating]:
    """Apply the ``simulated`` policy of :func:`export_study` to a study's ratings."""
    if mode not in SIMULATED_MODES:
        raise RatingError(f"simulated must be one of {', '.join(SIMULATED_MODES)}, not {mode!r}")
    sim = sorted({r.rater for r in ratings if r.simulated})
    real = sorted({r.rater for r in ratings if not r.simulated})
    if mode == "exclude":
        kept = [r for r in ratings if not r.simulated]
        if not kept and ratings:
            raise RatingError(f"{where}: only simulated ratings; nothing left to export")
        return kept
    if sim and real and mode == "refuse":
        raise RatingError(_mixed_message(where, sim, real))
    return ratings


def _mixed_message(where: str, sim: Sequence[str], real: Sequence[str]) -> str:
    def names(items: Sequence[str]) -> str:
        return ", ".join(items[:5]) + (f" (+{len(items) - 5})" if len(items) > 5 else "")

    return (
        f"{where}: refusing to average SIMULATED raters ({names(sim)}) with real raters "
        f"({names(real)}) into one MOS; use --exclude-simulated (simulated='exclude') for the "
        "real raters only, or --include-simulated (simulated='include') to mix them on purpose "
        "(every output is then labelled SIMULATED)"
    )
