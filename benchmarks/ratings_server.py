"""Benchmark: rating latency of the web app with 5 raters rating concurrently (loopback only).

Run: .venv/bin/python benchmarks/ratings_server.py [--ratings 200]
Builds a throw-away dataset (540 small images) in a temp folder, serves it with waitress in a
separate process on 127.0.0.1, and has 5 client processes each POST --ratings ratings (after
fetching the state) as fast as the server answers; each rater is its own process with one
keep-alive connection, like a browser tab. Prints p50/p95/p99/max of the POST latency
(target p99 < 50 ms). Every request is bounded; nothing leaves the machine.
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


def serve(dataset: Path, port_queue) -> None:
    import waitress

    from petctiqa.ratings.study import open_study
    from petctiqa.ratings.web import create_app

    study = open_study(dataset)
    app = create_app(dataset, study.store, study.scale, study.images, training=False)
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=8)
    port_queue.put(server.effective_port)
    server.run()


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
    parser.add_argument("--ratings", type=int, default=200, help="ratings per rater (<= 540)")
    args = parser.parse_args()
    from conftest import write_tiny_dataset

    from petctiqa.ratings.study import open_study

    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_tiny_dataset(Path(tmp) / "ds", patients=4, slices=5)
        study = open_study(dataset, seed=1)
        raters = study.store.add_raters([f"r{i}" for i in range(1, 6)])
        study.store.close()
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=serve, args=(dataset, queue), daemon=True)
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
            f"{len(lat_ms)} ratings by 5 concurrent raters in {wall:.2f} s "
            f"({len(lat_ms) / wall:.0f} ratings/s), SQLite WAL synchronous=NORMAL"
        )
        p50, p95, p99 = np.percentile(lat_ms, [50, 95, 99])
        print(
            f"POST /rating latency: p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, "
            f"max {lat_ms.max():.1f} ms (target p99 < 50 ms)"
        )


if __name__ == "__main__":
    main()
