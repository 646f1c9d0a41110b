"""Benchmark: aggregate 2,700 images x 5 raters (MOS, CI, BT.500, ICC, alpha, MLE) < 5 s.

Run: .venv/bin/python benchmarks/ratings_aggregate.py [--repeat 3]
Scores come from the simulated-rater model (20 patients x 5 slices x 27 cells).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from petctiqa.ratings.aggregate import aggregate, score_matrix
from petctiqa.ratings.simulate import (
    PUBLISHED_CELL_MOS,
    ObserverModel,
    draw_raters,
    simulate_scores,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
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
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        matrix = score_matrix(stim, rat, scores.ravel().astype(float), content)
        result = aggregate(matrix, ci="t", mle=True)
        times.append(time.perf_counter() - start)
    print(
        f"machine: {platform.node()} {platform.machine()} {platform.processor() or ''} "
        f"cpus={os.cpu_count()} python={platform.python_version()} numpy={np.__version__}"
    )
    print(
        f"matrix: {matrix.shape[0]} images x {matrix.shape[1]} raters, "
        f"{len(set(content))} contents; MLE iterations {result.mle.iterations} "
        f"(converged={result.mle.converged})"
    )
    print(
        f"aggregate incl. MLE: best {min(times):.3f} s, median {np.median(times):.3f} s "
        f"over {args.repeat} runs (target < 5 s)"
    )


if __name__ == "__main__":
    main()
