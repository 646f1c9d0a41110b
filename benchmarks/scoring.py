"""Scoring speed on the CPU: eager PyTorch vs ONNX Runtime, archive scoring, 2 processes vs 1.

    .venv/bin/python benchmarks/scoring.py [--steps 3] [--patients 2] [--slice-stride 20]
        [--dicom ../shared/data/dicom] [--threads 2] [--network-only]

Uses the full MS-IQA (random init, 224 x 224 resize preprocessing; speed does not depend on
the weights). Prints:

1. network images/s at batch 16 for eager and the ONNX Runtime path, timed alternately
   (eager, ort, eager, ort, ...) so that drift on a shared machine hits both alike; the one-off
   ONNX export time;
2. ``petctiqa score ARCHIVE --out x.csv`` wall time and studies/min on a fresh phantom archive
   (``--patients`` studies) and on ``--dicom``, every ``--slice-stride``-th slice, runtime ort
   (export cached), one process;
3. the same phantom archive under ``torchrun --nproc_per_node 2`` (1 thread each) against one
   process (``--threads`` threads), and whether both wrote the same file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def make_checkpoint(path: Path) -> Path:
    import torch

    from petctiqa.iqa.checkpoint import save_checkpoint
    from petctiqa.iqa.preprocess import Preprocessing
    from petctiqa.msiqa.model import MsIqa, MsIqaConfig

    torch.manual_seed(0)
    config = MsIqaConfig()
    save_checkpoint(
        path,
        {
            "model_name": "msiqa",
            "config": config.to_dict(),
            "label_scale": {"low": 0.0, "high": 4.0},
            "model": MsIqa(config).eval().state_dict(),
            "preprocessing": Preprocessing(size=224).to_dict(),
        },
    )
    return path


def network_speed(checkpoint: Path, cache: Path, steps: int, batch: int) -> None:
    import torch

    from petctiqa.iqa.score import Scorer

    scorer = Scorer(checkpoint, "cpu")
    start = time.perf_counter()
    ort, _, _ = scorer.runtime_model("ort", 1, batch, cache_dir=cache)
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        reference = scorer.model.forward_parts(x)["score"]
        fast = ort.forward_parts(x)["score"]
    print(f"ONNX export + session: {time.perf_counter() - start:.1f} s (once per checkpoint)")
    print(f"max |ort - eager| on the 0..4 scale: {4 * (fast - reference).abs().max():.2e}")
    rates: dict[str, list[float]] = {"eager": [], "ort": []}
    for _ in range(steps):
        for name, model in (("eager", scorer.model), ("ort", ort)):
            with torch.inference_mode():
                start = time.perf_counter()
                model.forward_parts(x)
            rates[name].append(batch / (time.perf_counter() - start))
    for name, values in rates.items():
        print(f"{name}: {', '.join(f'{v:.2f}' for v in values)} images/s")
    ratios = [o / e for o, e in zip(rates["ort"], rates["eager"], strict=True)]
    print(f"ort / eager, pair by pair: {', '.join(f'{r:.2f}x' for r in ratios)}")


def score_command(archive: Path, checkpoint: Path, out: Path, stride: int, procs: int):
    base = ["score", str(archive), "--checkpoint", str(checkpoint), "--out", str(out),
            "--device", "cpu", "--runtime", "ort", "--slice-stride", str(stride)]  # fmt: skip
    if procs == 1:
        return [str(BIN / "petctiqa"), *base]
    return [str(BIN / "torchrun"), "--standalone", "--nnodes", "1", "--nproc_per_node",
            str(procs), "-m", "petctiqa_cli.main", *base]  # fmt: skip


def timed_score(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr[-2000:])
    return time.perf_counter() - start


def studies(out: Path) -> int:
    return sum(1 for line in out.read_text().splitlines() if line.startswith("study,"))


def archive_speed(args, checkpoint: Path, cache: Path, work: Path) -> None:
    env = {**os.environ, "PETCTIQA_ONNX_CACHE": str(cache), "OMP_NUM_THREADS": str(args.threads)}
    phantom = work / "phantom"
    subprocess.run(
        [str(BIN / "petctiqa"), "phantom", "--out", str(phantom), "--patients",
         str(args.patients)], check=True, capture_output=True,
    )  # fmt: skip
    archives = [("phantom", phantom)] + ([("dicom", Path(args.dicom))] if args.dicom else [])
    for name, archive in archives:
        out = work / f"{name}.csv"
        seconds = timed_score(score_command(archive, checkpoint, out, args.slice_stride, 1), env)
        count = studies(out)
        slices = sum(1 for line in out.read_text().splitlines() if line.startswith("slice,"))
        print(
            f"archive {name}: {count} studies, {slices} slices in {seconds:.1f} s = "
            f"{60 * count / seconds:.2f} studies/min (stride {args.slice_stride}, 1 process, "
            f"{args.threads} threads, model load and walk included)"
        )
    two = work / "phantom-2.csv"
    env1 = {**env, "OMP_NUM_THREADS": "1"}
    seconds2 = timed_score(score_command(phantom, checkpoint, two, args.slice_stride, 2), env1)
    again = work / "phantom-again.csv"
    seconds1 = timed_score(score_command(phantom, checkpoint, again, args.slice_stride, 1), env)
    same = two.read_text() == again.read_text()
    print(
        f"phantom, torchrun 2 processes x 1 thread: {seconds2:.1f} s; 1 process x "
        f"{args.threads} threads right after: {seconds1:.1f} s; speed-up "
        f"{seconds1 / seconds2:.2f}x; same output: {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patients", type=int, default=2)
    parser.add_argument("--slice-stride", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dicom", default="")
    parser.add_argument("--network-only", action="store_true", help="skip the archive runs")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} batch={args.batch} cores={os.cpu_count()}")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        checkpoint = make_checkpoint(work / "msiqa.pt")
        cache = work / "onnx"
        network_speed(checkpoint, cache, args.steps, args.batch)
        if not args.network_only:
            archive_speed(args, checkpoint, cache, work)


if __name__ == "__main__":
    main()
