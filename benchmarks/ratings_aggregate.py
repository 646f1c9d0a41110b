"""Benchmark: aggregate 2,700 images x 5 raters (MOS, CI, BT.500, ICC, alpha, MLE) < 5 s, and
the end-to-end ``collect-ratings export`` of such a study < 5 s.

Run: .venv/bin/python benchmarks/ratings_aggregate.py [--repeat 3]
Scores come from the simulated-rater model (20 patients x 5 slices x 27 cells). The export part
builds a throw-away 2,700-image dataset (tiny JPEGs) in a temp folder, fills it with
``simulate_study`` (5 raters, as ``collect-ratings simulate --raters 5``) and times
``export_study`` -- the library call ``collect-ratings export`` makes -- writing mos.csv,
ratings_raw.csv, stimulus_mos.csv, rater_report.csv and agreement.json/png.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from petctiqa.ratings.aggregate import aggregate, score_matrix
from petctiqa.ratings.simulate import (
    PUBLISHED_CELL_MOS,
    ObserverModel,
    draw_raters,
    simulate_scores,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ratings"))


def time_aggregate(repeat: int) -> None:
    cells = sorted(PUBLISHED_CELL_MOS)
    keys = [
        f"P{p:02d}_s{k}_p{c[0]}g{c[1]}j{c[2]}"
        for p in range(20)
        for k in range(1, 6)
        for c in cells
    ]
    cell_list = [c for _ in range(100) for c in cells]
    raters = draw_raters([f"sim{i}" for i in range(1, 6)], 0, ObserverModel())
    scores = simulate_scores(keys, cell_list, raters, 0)
    stim = np.repeat(keys, 5)
    rat = np.tile([r.rater for r in raters], len(keys))
    content = [k.rsplit("_", 1)[0] for k in stim]
    for method in ("reml", "ml"):
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            matrix = score_matrix(stim, rat, scores.ravel().astype(float), content)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = aggregate(matrix, ci="t", mle=True, mle_method=method)
            times.append(time.perf_counter() - start)
        note = "(default)" if method == "reml" else "(SUREAL's estimator)"
        print(
            f"aggregate incl. MLE {method} {note}: best {min(times):.3f} s, median "
            f"{np.median(times):.3f} s over {repeat} runs; {result.mle.iterations} iterations, "
            f"converged={result.mle.converged} (target < 5 s)"
        )
        if result.mle.problems:
            print(f"  {method} problems: {'; '.join(result.mle.problems)}")
    print(
        f"matrix: {matrix.shape[0]} images x {matrix.shape[1]} raters, {len(set(content))} contents"
    )


def time_export(repeat: int) -> None:
    from conftest import write_tiny_dataset

    from petctiqa.ratings.export import export_study
    from petctiqa.ratings.study import open_study, simulate_study

    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_tiny_dataset(Path(tmp) / "ds", patients=20, slices=5, size=(8, 8))
        study = open_study(dataset, seed=0)
        stored = simulate_study(study, 5, seed=0)
        times = []
        for i in range(repeat):
            study = open_study(dataset)  # as the CLI does
            start = time.perf_counter()
            paths = export_study(study.store, dataset, study.images, Path(tmp) / f"out{i}")
            times.append(time.perf_counter() - start)
            study.store.close()
        print(
            f"export (export_study, as collect-ratings export): {len(study.images)} images x 5 "
            f"raters ({stored} ratings), {len(paths)} files incl. agreement.png: best "
            f"{min(times):.3f} s, median {np.median(times):.3f} s over {repeat} runs "
            "(target < 5 s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {platform.machine()} {platform.processor() or ''} "
        f"cpus={os.cpu_count()} python={platform.python_version()} numpy={np.__version__}"
    )
    time_aggregate(args.repeat)
    time_export(args.repeat)


if __name__ == "__main__":
    main()
