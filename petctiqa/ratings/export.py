"""Aggregation results on disk: ``stimulus_mos.csv``, ``rater_report.csv``, ``agreement.json``
and ``agreement.png`` for any aggregation, and a study's full export (``mos.csv``, the training
CSV, plus ``ratings_raw.csv``).

Every exported CSV of ratings that include a simulated rater starts with
:data:`~petctiqa.ratings.mixing.SIMULATED_BANNER` and has a ``simulated`` column (read with
``pandas.read_csv(path, comment="#")``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from petctiqa.atomic import atomic_write_text
from petctiqa.dataset.folder import MOS_NAME, read_manifest_header, read_manifest_rows
from petctiqa.errors import RatingError
from petctiqa.ratings.aggregate import (
    Aggregation,
    AggregationOptions,
    aggregate,
    check_scale,
    score_matrix,
)
from petctiqa.ratings.figures import write_agreement_figure
from petctiqa.ratings.mixing import SIMULATED_BANNER, select_simulated
from petctiqa.ratings.store import Rating, RatingStore
from petctiqa.ratings.study_images import StudyImage

MANIFEST_EXTRA_COLUMNS = ("slice_number", "reference")
"""manifest.csv columns copied into mos.csv when present, before the axes' value columns."""


class StudyWarning(UserWarning):
    """Something in an export the user should know about (e.g. images without ratings)."""


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


def _raw_frame(ratings: Sequence[Rating], info: dict[str, StudyImage]) -> pd.DataFrame:
    """``ratings_raw.csv``: one row per rating."""
    return pd.DataFrame(
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


def _mos_frame(
    dataset: Path, images: Sequence[StudyImage], result: Aggregation, raw: pd.DataFrame
) -> pd.DataFrame:
    """``mos.csv``: one row per manifest image (n = 0 and empty statistics when unrated)."""
    stat_columns = ["mos", "std", "n", "ci95_low", "ci95_high", "bt500_mos"]
    if result.mle is not None:
        stat_columns += ["mle_quality", "mle_quality_std"]
    per_stim = stimulus_table(result).rename(columns={"stimulus": "image"})
    sim_images = set(raw.loc[raw["simulated"] == "true", "image"])
    base = pd.DataFrame(
        {"image": [im.image for im in images], "image_id": [im.image_id for im in images]}
    )
    mos = base.merge(per_stim[["image", *stat_columns]], on="image", how="left")
    mos["n"] = mos["n"].fillna(0).astype(int)
    mos["patient_id"] = [im.patient_id for im in images]
    mos["slice_id"] = [im.slice_id for im in images]
    for column, _ in images[0].levels if images else ():
        mos[column] = [im.level(column) for im in images]
    mos["split"] = [im.split for im in images]
    mos["simulated"] = [str(im.image in sim_images).lower() for im in images]
    for column, texts in _manifest_text(dataset, images).items():
        mos[column] = texts
    return mos


def _manifest_text(dataset: Path, images: Sequence[StudyImage]) -> dict[str, list[str]]:
    """The manifest's own text of :data:`MANIFEST_EXTRA_COLUMNS` and the axes' value columns
    (as written by the build, not reformatted), per image, for the columns the manifest has."""
    values = [a.column for a in images[0].axes] if images else []
    header = read_manifest_header(dataset)
    columns = tuple(c for c in (*MANIFEST_EXTRA_COLUMNS, *values) if c in header)
    if not columns:
        return {}
    rows = {row["image"]: row for _, row in read_manifest_rows(dataset, ("image", *columns))}
    return {c: [rows[im.image][c] for im in images] for c in columns}


def _warn_unrated(images: Sequence[StudyImage], rated: set[str]) -> None:
    unrated = sum(1 for im in images if im.image not in rated)
    if unrated:
        warnings.warn(
            f"{unrated} of {len(images)} images have no ratings yet; their mos.csv rows have "
            "n = 0 and empty statistics",
            StudyWarning,
            stacklevel=3,
        )


def export_study(
    store: RatingStore,
    dataset: Path,
    images: Sequence[StudyImage],
    out: Path,
    options: AggregationOptions | None = None,
    *,
    figure: bool = True,
    simulated: str = "refuse",
) -> dict[str, Path]:
    """Export a study: ``ratings_raw.csv`` (long), ``mos.csv`` (the training CSV: one row per
    manifest image with mos/std/n/CI, manifest patient/slice/levels, split, simulated), plus the
    rater report and agreement files of :func:`write_aggregation`, aggregated with
    ``options`` (default :class:`AggregationOptions`).

    ``simulated``: what to do when the study holds ratings of simulated AND real raters --
    ``refuse`` (default: :class:`~petctiqa.ratings.mixing.MixedRatersError`, a MOS must not
    average the two), ``include`` (mix them; every file is labelled SIMULATED) or ``exclude``
    (export the real raters only). Images without ratings get n = 0 and empty statistics (a
    :class:`StudyWarning` says how many). Raises if nothing was rated.
    """
    ratings = select_simulated(store.ratings(), simulated, str(store.path))
    if not ratings:
        raise RatingError(f"{store.path}: no ratings to export")
    known = {r.rater: r.simulated for r in store.raters()}
    simulated_raters = {r.rater: known.get(r.rater, r.simulated) for r in ratings}
    any_sim = any(r.simulated for r in ratings)
    info = {im.image: im for im in images}
    raw = _raw_frame(ratings, info)
    rated = set(raw["image"])
    _warn_unrated(images, rated)
    matrix = score_matrix(
        raw["image"],
        raw["rater"],
        raw["score"].astype(float),
        content=[info[i].slice_id if i in info else i for i in raw["image"]],
        stimulus_order=[im.image for im in images if im.image in rated],
    )
    check_scale(matrix, store.scale_min, store.scale_max)
    result = aggregate(matrix, options)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_aggregation(result, out, simulated_raters, figure=figure)
    paths["ratings_raw"] = out / "ratings_raw.csv"
    _frame_to_csv(raw, paths["ratings_raw"], any_sim)
    paths["mos"] = out / MOS_NAME
    _frame_to_csv(_mos_frame(dataset, images, result, raw), paths["mos"], any_sim)
    return paths
