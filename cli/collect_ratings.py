"""``petctiqa collect-ratings``: run a reader study and turn its ratings into MOS.

Only option parsing and printing live here; the work is in :mod:`petctiqa.ratings`.
Heavy imports (numpy, pandas, flask) happen inside the commands.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from petctiqa.errors import DatasetError, RatingError
from petctiqa_cli._common import echo_warnings

DATASET = click.option(
    "--dataset",
    "dataset",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder written by build-dataset (manifest.csv, images/).",
)
DB = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Rating database [default: DATASET/ratings.sqlite].",
)
SCALE = click.option(
    "--scale",
    default="likert-0-4",
    show_default=True,
    help="Rating-scale protocol: shipped name or TOML path.",
)


_AGGREGATION_OPTIONS = (
    click.option(
        "--ci",
        type=click.Choice(["t", "normal"]),
        default="t",
        show_default=True,
        help="95% CI of the MOS: Student t, or SUREAL's normal 1.96*s/sqrt(n).",
    ),
    click.option(
        "--screening/--no-screening",
        default=False,
        show_default=True,
        help="Drop raters rejected by ITU-R BT.500 from the MOS (always reported).",
    ),
    click.option(
        "--zscore",
        is_flag=True,
        help="z-score each rater before averaging (mapped back to the scale).",
    ),
    click.option(
        "--mle/--no-mle",
        default=True,
        show_default=True,
        help="Fit the MLE subject model (quality, rater bias, inconsistency).",
    ),
    click.option(
        "--mle-method",
        type=click.Choice(["reml", "ml"]),
        default="reml",
        show_default=True,
        help="Subject model fit: reml (well-posed with few raters) or ml (SUREAL's estimator).",
    ),
    click.option(
        "--bt500-skip-unanimous",
        is_flag=True,
        help="BT.500: images all raters scored alike add no outliers (SUREAL counts them; "
        "with 5 raters that makes everyone an outlier).",
    ),
    click.option(
        "--include-simulated",
        is_flag=True,
        help="Average simulated and real raters together (refused by default; output is "
        "labelled SIMULATED).",
    ),
    click.option(
        "--exclude-simulated",
        is_flag=True,
        help="Use only the real raters' ratings when simulated ones are present too.",
    ),
)


def aggregation_options(command):
    """The options `export` and `aggregate` share (CI, screening, z-score, MLE, simulated)."""
    for option in reversed(_AGGREGATION_OPTIONS):
        command = option(command)
    return command


MAX_PROBLEM_LINES = 50
"""``import`` prints this many problems, then how many more there are."""


def _aggregation_choices(given: dict):
    """(AggregationOptions, simulated policy) from the options of :func:`aggregation_options`."""
    # lazy: `petctiqa --help` imports this module; ratings code pulls in NumPy
    from petctiqa.ratings.aggregate import AggregationOptions

    include, exclude = given.pop("include_simulated"), given.pop("exclude_simulated")
    if include and exclude:
        raise click.UsageError("--include-simulated and --exclude-simulated exclude each other")
    mode = "include" if include else "exclude" if exclude else "refuse"
    return AggregationOptions(**given), mode


MIXED_ADVICE = (
    "use --exclude-simulated for the real raters only, or --include-simulated to mix them on "
    "purpose (every output is then labelled SIMULATED)"
)


@contextlib.contextmanager
def _study_errors_in_cli_words():
    """Re-word the library's study errors with the options that resolve them."""
    # lazy: `petctiqa --help` imports this module; ratings code pulls in NumPy
    from petctiqa.ratings.mixing import MixedRatersError
    from petctiqa.ratings.store import StudyMismatch

    try:
        yield
    except MixedRatersError as exc:
        raise RatingError(f"{exc.fact}; {MIXED_ADVICE}") from None
    except StudyMismatch as exc:
        raise RatingError(f"{exc}; start a new study with another --db") from None


@contextlib.contextmanager
def _study(dataset, db, scale, seed=None):
    """:func:`opened_study` (no new, empty database left by a failure), CLI-worded errors."""
    # lazy: `petctiqa --help` imports this module; ratings code pulls in NumPy
    from petctiqa.ratings.study import opened_study

    with _study_errors_in_cli_words(), opened_study(dataset, db, scale, seed) as study:
        yield study


def _rater_list(raters: str | None) -> list[str]:
    if not raters:
        return []
    path = Path(raters)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        items = [line.split("#")[0].strip() for line in text.splitlines()]
        items = [i for part in items for i in part.split(",")]
    else:
        items = raters.split(",")
    return [i.strip() for i in items if i.strip()]


@click.group("collect-ratings")
def collect_ratings() -> None:
    """Reader study: rating web app, sheet import, MOS export, simulated raters.

    \b
    Examples:
      petctiqa collect-ratings serve --dataset ds/ --raters r1,r2,r3,r4,r5
      petctiqa collect-ratings import --dataset ds/ sheets/r1.xlsx sheets/r2.csv
      petctiqa collect-ratings export --dataset ds/            # ds/mos.csv + report
      petctiqa collect-ratings aggregate scores.csv --out agg/ --scale-min 1 --scale-max 5
      petctiqa collect-ratings simulate --dataset ds/ --raters 5
      petctiqa collect-ratings power
    """


@collect_ratings.command("serve")
@DATASET
@DB
@SCALE
@click.option(
    "--raters",
    required=True,
    help="Comma-separated rater IDs, or a file with one ID per line. On a restart pass the same "
    "list: existing raters keep their links and progress, new IDs are added.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port (0 = any free port).",
)
@click.option("--seed", type=int, default=None, help="Presentation-order seed of a NEW study.")
@click.option("--training/--no-training", default=None, help="Override the scale's training block.")
@click.option(
    "--new-admin-token", is_flag=True, help="Replace the admin token (old link stops working)."
)
@click.option(
    "--new-link",
    "new_links",
    multiple=True,
    metavar="RATER",
    help="Give RATER a new private link (the old one stops working); repeatable. Links are "
    "shown only when made: the database keeps only their hash.",
)
@click.option(
    "--threads",
    default=8,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker threads of the waitress server.",
)
def serve(
    dataset, db, scale, raters, host, port, seed, training, new_admin_token, new_links, threads
) -> None:
    """Serve the rating web app (Flask + waitress) until Ctrl-C.

    Prints a private link for each new rater (and for each --new-link); a rater's link opens
    only their own session, which resumes where they stopped after a browser close or a
    server restart. Links are printed once, when made (only their hash is stored). The admin
    link (also printed once) shows progress and the raw ratings.

    \b
    Examples:
      petctiqa collect-ratings serve --dataset ds/ --raters r1,r2,r3,r4,r5
      petctiqa collect-ratings serve --dataset ds/ --raters raters.txt --port 9000
      petctiqa collect-ratings serve --dataset ds/ --raters r1,r2 --host 0.0.0.0  # LAN: warns
    """
    # lazy: `petctiqa --help` imports this module; these pull in waitress, Flask and NumPy
    from petctiqa.ratings.serving import create_server
    from petctiqa.ratings.web import bind_warning, create_app

    # a failure before serving leaves no new, empty database behind
    with _study(dataset, db, scale, seed) as study:
        app = create_app(dataset, study.store, study.scale, study.images, training)
        # bind before any link is made: a busy port must not swallow new links
        server = create_server(app, host=host, port=port, threads=threads)
        names = _rater_list(raters)
        made = {r.rater: r for r in study.store.add_raters(names) if r.token is not None}
        made.update((name, study.store.new_rater_token(name)) for name in new_links)
        real = [r for r in study.store.raters() if not r.simulated]
        if not real:
            server.close()
            raise RatingError("no raters: pass --raters r1,r2,... (or a file with one ID per line)")
        admin = None
        if new_admin_token or not study.store.has_admin_token():
            admin = study.store.new_admin_token()
    bound = f"http://{host if ':' not in host else '[' + host + ']'}:{server.effective_port}"
    warning = bind_warning(host)
    if warning:
        click.echo(warning, err=True)
    click.echo(f"study: {len(study.images)} images, database {study.store.path}")
    for rater in real:
        prog = study.store.progress(rater.rater)
        link = (
            f"{bound}/r/{made[rater.rater].token}"
            if rater.rater in made
            else f"(link printed when made; --new-link {rater.rater} replaces it)"
        )
        click.echo(f"  {rater.rater:<16} {link}   ({prog.done}/{prog.total} done)")
    if admin is not None:
        click.echo(f"admin (shown once, keep it): {bound}/admin/{admin}")
    else:
        click.echo("admin: link printed when created (use --new-admin-token to replace it)")
    click.echo("Ctrl-C stops the server; every answered rating is already saved.")
    try:
        server.run()
    except KeyboardInterrupt:
        click.echo("stopped")


@collect_ratings.command("import")
@DATASET
@DB
@SCALE
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@click.option("--allow-missing", is_flag=True, help="Accept sheets that do not rate every image.")
def import_(dataset, db, scale, files, allow_missing) -> None:
    """Import per-rater rating sheets (CSV or XLSX).

    Each sheet has columns image (path as in manifest.csv, or image_id) and score, and
    optionally rater (default: the file name stem). All sheets are validated first (unknown
    image, duplicate, score not an integer on the scale, missing images, already in the
    database); if any sheet has a problem NOTHING is imported and every problem is listed as
    FILE:LINE: message.

    \b
    Examples:
      petctiqa collect-ratings import --dataset ds/ r1.xlsx r2.xlsx r3.csv
      petctiqa collect-ratings import --dataset ds/ --allow-missing pilot_r1.csv
    """
    # lazy: `petctiqa --help` imports this module; ratings code pulls in NumPy
    from petctiqa.ratings.sheet_import import import_sheets

    with _study(dataset, db, scale) as study:
        checks, count = import_sheets(study.store, list(files), study.images, allow_missing)
        problems = [p for c in checks for p in c.problems]
        for problem in problems[:MAX_PROBLEM_LINES]:
            click.echo(str(problem), err=True)
        if len(problems) > MAX_PROBLEM_LINES:
            click.echo(
                f"... and {len(problems) - MAX_PROBLEM_LINES} more problem(s) not shown", err=True
            )
        if problems:
            bad = sum(1 for c in checks if c.problems)
            raise RatingError(
                f"{len(problems)} problem(s) in {bad} of {len(checks)} sheet(s); nothing imported"
            )
    for c in checks:
        click.echo(f"{c.file}: rater {c.rater}: {len(c.ratings)} ratings")
    click.echo(f"imported {count} ratings into {study.store.path}")


@collect_ratings.command("export")
@DATASET
@DB
@SCALE
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder [default: the dataset folder].",
)
@aggregation_options
def export(dataset, db, scale, out, **aggregation) -> None:
    """Write mos.csv, ratings_raw.csv, rater_report.csv, stimulus_mos.csv, agreement.json/png.

    mos.csv has one row per manifest image: image, mos, std, n, ci95_low, ci95_high, the
    manifest's patient/slice, the level of every grid axis of the protocol, split,
    simulated, then slice number, reference and every axis's value (read it with pandas
    comment="#").
    A study with both simulated and real raters is refused unless --exclude-simulated or
    --include-simulated says what to do.

    \b
    Examples:
      petctiqa collect-ratings export --dataset ds/
      petctiqa collect-ratings export --dataset ds/ --out results/ --ci normal --screening
      petctiqa collect-ratings export --dataset ds/ --exclude-simulated   # after a pilot
    """
    # lazy: `petctiqa --help` imports this module; ratings code pulls in NumPy
    from petctiqa.ratings.export import export_study

    options, mode = _aggregation_choices(aggregation)
    with _study(dataset, db, scale) as study, echo_warnings():
        paths = export_study(
            study.store, dataset, study.images, out or dataset, options, simulated=mode
        )
    if study.store.any_simulated() and mode != "exclude":
        click.echo("note: the study contains SIMULATED ratings; the exports say so", err=True)
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


@collect_ratings.command("aggregate")
@click.argument("ratings_csv", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder for stimulus_mos.csv, rater_report.csv, agreement.json/png.",
)
@click.option(
    "--scale-min",
    type=float,
    default=0,
    show_default=True,
    help="Lowest score of the rating scale (scores below are an error).",
)
@click.option(
    "--scale-max",
    type=float,
    default=4,
    show_default=True,
    help="Highest score of the rating scale (scores above are an error).",
)
@click.option(
    "--content-column", default=None, help="Column naming each stimulus's source content (MLE)."
)
@click.option(
    "--content-pattern",
    default=None,
    help="Regex whose first group of the stimulus name is its content, e.g. '^([^_]+)_'.",
)
@aggregation_options
def aggregate_cmd(
    ratings_csv, out, scale_min, scale_max, content_column, content_pattern, **aggregation
) -> None:
    """Aggregate any long CSV (stimulus, rater, score) without a dataset folder.

    Writes OUT/stimulus_mos.csv (mos, std, n, CI, bt500_mos, mle_quality),
    OUT/rater_report.csv and OUT/agreement.json/png. A CSV with a simulated column (as
    ratings_raw.csv) that mixes simulated and real raters is refused unless
    --exclude-simulated or --include-simulated says what to do.

    \b
    Examples:
      petctiqa collect-ratings aggregate ds/ratings_raw.csv --out agg/
      petctiqa collect-ratings aggregate NFLX.csv --out nflx/ --scale-min 1 --scale-max 5 \\
          --ci normal --content-pattern '^([^_]+)_'
    """
    # lazy: `petctiqa --help` imports this module; ratings code pulls in NumPy
    from petctiqa.ratings.aggregate import aggregate, check_scale
    from petctiqa.ratings.export import write_aggregation
    from petctiqa.ratings.long_csv import read_long_ratings

    options, mode = _aggregation_choices(aggregation)
    with _study_errors_in_cli_words():
        matrix, simulated = read_long_ratings(ratings_csv, content_column, content_pattern, mode)
    check_scale(matrix, scale_min, scale_max)
    with echo_warnings():
        result = aggregate(matrix, options)
    paths = write_aggregation(result, out, simulated if any(simulated.values()) else None)
    rejected = [r for r, x in zip(matrix.raters, result.bt500.rejected, strict=True) if x]
    click.echo(f"{len(matrix.stimuli)} stimuli x {len(matrix.raters)} raters")
    click.echo(f"BT.500 rejects: {', '.join(rejected) if rejected else 'none'}")
    if result.icc is not None:
        click.echo(f"ICC(2,1) = {result.icc.icc2_1:.3f}   ICC(2,k) = {result.icc.icc2_k:.3f}")
    click.echo(
        f"Krippendorff alpha: interval {result.alpha_interval:.3f}, ordinal {result.alpha_ordinal:.3f}"
    )
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


@collect_ratings.command("simulate")
@DATASET
@DB
@SCALE
@click.option(
    "--raters",
    default=5,
    show_default=True,
    type=click.IntRange(1, 99),
    help="Number of simulated raters to add (sim01, sim02, ...).",
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed of the simulated scores."
)
@click.option(
    "--latent-model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON file mapping the manifest's parameter columns to latent quality "
    "(intercept + coefficients); required for protocols other than the published grid.",
)
def simulate(dataset, db, scale, raters, seed, latent_model) -> None:
    """Fill the study with SIMULATED raters (sim01, ...) for pilots and tests.

    Observer model: latent quality per image calibrated to the published PET-CT-IQA-DS MOS of
    its distortion cell, per-rater bias and inconsistency, rounded and clipped to the scale.
    Datasets of other protocols (no published MOS table) are refused unless --latent-model
    gives their latent quality. Simulated ratings are stored with simulated = true and every
    export says so.

    \b
    Examples:
      petctiqa collect-ratings simulate --dataset ds/ --raters 5
      petctiqa collect-ratings simulate --dataset ds/ --raters 5 --db pilot.sqlite --seed 7
    """
    # lazy: `petctiqa --help` imports this module; ratings code pulls in NumPy
    from petctiqa.ratings.latent_model import (
        NeedsLatentModel,
        check_simulation_design,
        load_latent_model,
    )
    from petctiqa.ratings.study import simulate_study

    model = load_latent_model(latent_model) if latent_model else None
    try:
        check_simulation_design(dataset, model)
    except NeedsLatentModel as exc:
        raise DatasetError(f"{exc}; give it with --latent-model FILE") from None
    with _study(dataset, db, scale) as study:
        count = simulate_study(study, raters, seed, latent_model=model, dataset=dataset)
    click.echo(f"stored {count} SIMULATED ratings from {raters} rater(s) in {study.store.path}")


@collect_ratings.command("power")
@click.option(
    "--min-raters",
    default=3,
    show_default=True,
    type=click.IntRange(2, 100),
    help="Smallest panel size to report.",
)
@click.option(
    "--max-raters",
    default=10,
    show_default=True,
    type=click.IntRange(2, 100),
    help="Largest panel size to report.",
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed of the simulated panels."
)
def power(min_raters, max_raters, seed) -> None:
    """Expected 95% CI width of an image's MOS for panels of 3..10 raters (simulated).

    Uses the simulated-rater model calibrated to the published PET-CT-IQA-DS MOS table
    (0..4 scale), averaged over all 27 distortion cells.

    \b
    Examples:
      petctiqa collect-ratings power
      petctiqa collect-ratings power --min-raters 5 --max-raters 15
    """
    # lazy: `petctiqa --help` imports this module; ratings code pulls in NumPy
    from petctiqa.ratings.simulate import power_table

    if max_raters < min_raters:
        raise RatingError(f"--max-raters {max_raters} is below --min-raters {min_raters}")
    rows = power_table(range(min_raters, max_raters + 1), seed=seed)
    click.echo("raters  CI95 width (t)  CI95 width (normal)  analytic t  mean |MOS error|")
    for r in rows:
        click.echo(
            f"{r.raters:>6}  {r.expected_ci_width_t:>14.3f}  {r.expected_ci_width_normal:>19.3f}"
            f"  {r.analytic_ci_width_t:>10.3f}  {r.mean_abs_mos_error:>16.3f}"
        )
    click.echo("(simulated raters; widths on the 0..4 scale, full width = 2 x half-width)")
