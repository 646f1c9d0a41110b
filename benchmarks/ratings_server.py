"""Benchmark: rating latency of the web app with 5 raters rating concurrently (loopback only).

Run: .venv/bin/python benchmarks/ratings_server.py [--ratings 200] [--images 540] [--prefill 0]
[--synchronous FULL|NORMAL]
Builds a throw-away dataset (``--images`` small images, a multiple of 135: patients x 5 slices
x 27 cells) in a temp folder, optionally pre-fills every rater's first ``--prefill`` ratings
(web ratings in presentation order, as if the study were that far along), serves it with
waitress in a separate process on 127.0.0.1, and has 5 client processes each POST --ratings
ratings (after fetching the state) as fast as the server answers; each rater is its own
process with one keep-alive connection, like a browser tab. Prints p50/p95/p99/max of the POST
latency (target p99 < 50 ms). Late in a full study:
``--images 2700 --prefill 2500 --ratings 200``. Every request is bounded; nothing leaves the
machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ratings"))


def serve(dataset: Path, synchronous: str, port_queue) -> None:
    from petctiqa.ratings.serving import create_server
    from petctiqa.ratings.study import open_study
    from petctiqa.ratings.web import create_app

    study = open_study(dataset, synchronous=synchronous)
    app = create_app(dataset, study.store, study.scale, study.images, training=False)
    # the server `collect-ratings serve` runs (same limits and timeouts)
    server = create_server(app, host="127.0.0.1", port=0, threads=8)
    port_queue.put(server.effective_port)
    server.run()


def store_commit_ms(dataset: Path, synchronous: str, count: int) -> np.ndarray:
    """Milliseconds per ``record_web_rating`` in this process (no HTTP): what the fsync of
    ``synchronous=FULL`` costs, apart from scheduling. Uses a throw-away rater."""
    from petctiqa.ratings.study import open_study

    store = open_study(dataset, synchronous=synchronous).store
    store.add_raters(["commit-timer"])
    times = []
    for i in range(count):
        position, image = store.next_item("commit-timer")
        start = time.perf_counter()
        store.record_web_rating("commit-timer", image, position, i % 5)
        times.append(time.perf_counter() - start)
    store.close()
    return np.array(times) * 1000


def rater_loop(port: int, token: str, count: int, start_at: float, out) -> None:
    """One rater = one process with one keep-alive HTTP connection (like one browser tab)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", f"/api/r/{token}/state")
    state = json.loads(conn.getresponse().read())
    latencies = []
    while time.time() < start_at:
        time.sleep(0.001)
    for i in range(count):
        cur = state["current"]
        body = json.dumps({"image": cur["image"], "position": cur["position"], "score": i % 5})
        start = time.perf_counter()
        conn.request("POST", f"/api/r/{token}/rating", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        latencies.append(time.perf_counter() - start)
        if resp.status != 201:
            raise RuntimeError(data.decode())
        state = json.loads(data)["state"]
    out.put(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=200, help="ratings per rater to time")
    parser.add_argument(
        "--images", type=int, default=540, help="images in the study (multiple of 135)"
    )
    parser.add_argument(
        "--prefill", type=int, default=0, help="ratings per rater stored before the clock starts"
    )
    parser.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="SQLite synchronous setting of the server (FULL: the app's default, fsync per "
        "rating; NORMAL: no fsync, for comparison)",
    )
    args = parser.parse_args()
    if args.images <= 0 or args.images % 135:
        parser.error("--images must be a positive multiple of 135 (patients x 5 slices x 27)")
    if args.prefill < 0 or args.prefill + args.ratings > args.images:
        parser.error("--prefill + --ratings must not exceed --images")
    from conftest import write_tiny_dataset

    from petctiqa.ratings.store import Rating, utc_now
    from petctiqa.ratings.study import open_study

    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_tiny_dataset(Path(tmp) / "ds", patients=args.images // 135, slices=5)
        study = open_study(dataset, seed=1)
        raters = study.store.add_raters([f"r{i}" for i in range(1, 6)])
        if args.prefill:
            with study.store._connect() as conn:
                rows = conn.execute(
                    "SELECT rater, position, image FROM presentation WHERE position < ? "
                    "ORDER BY rater, position",
                    (args.prefill,),
                ).fetchall()
            now = utc_now()
            study.store.insert_ratings(
                [Rating(r, image, pos % 5, pos, now, "web", False) for r, pos, image in rows]
            )
        synchronous = args.synchronous
        study.store.close()
        commit_ms = store_commit_ms(dataset, synchronous, min(200, args.images))
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=serve, args=(dataset, synchronous, queue), daemon=True)
        proc.start()
        try:
            port = queue.get(timeout=60)
            base = f"http://127.0.0.1:{port}"
            requests.get(f"{base}/", timeout=10).raise_for_status()
            results = ctx.Queue()
            start_at = time.time() + 3.0
            clients = [
                ctx.Process(
                    target=rater_loop, args=(port, r.token, args.ratings, start_at, results)
                )
                for r in raters
            ]
            for c in clients:
                c.start()
            per_rater = [results.get(timeout=300) for _ in clients]
            wall = time.time() - start_at
            for c in clients:
                c.join(timeout=10)
        finally:
            proc.terminate()
            proc.join(timeout=10)
        lat_ms = np.array([x for lat in per_rater for x in lat]) * 1000
        print(
            f"machine: {platform.node()} {platform.machine()} cpus={os.cpu_count()} "
            f"python={platform.python_version()}"
        )
        print(
            f"study: {args.images} images, {args.prefill} ratings per rater already stored "
            f"(timed ratings {args.prefill + 1}..{args.prefill + args.ratings} of {args.images})"
        )
        print(
            f"{len(lat_ms)} ratings by 5 concurrent raters in {wall:.2f} s "
            f"({len(lat_ms) / wall:.0f} ratings/s), SQLite WAL synchronous={synchronous}"
        )
        p50, p95, p99 = np.percentile(lat_ms, [50, 95, 99])
        print(
            f"POST /rating latency: p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, "
            f"max {lat_ms.max():.1f} ms (target p99 < 50 ms)"
        )
        c50, c99 = np.percentile(commit_ms, [50, 99])
        print(
            f"store commit alone (one process, no HTTP, {len(commit_ms)} ratings): "
            f"p50 {c50:.2f} ms, p99 {c99:.2f} ms, max {commit_ms.max():.2f} ms"
        )


if __name__ == "__main__":
    main()
