"""Scoring speed on the CPU: eager vs ONNX Runtime vs OpenVINO, archive scoring vs the pure
model, 2 processes vs 1 (issue #14; figures and how to read them: docs/scoring.md).

    .venv/bin/python benchmarks/scoring.py [--models msiqa,petct-cnn] [--slice-stride 4]
        [--patients 20] [--phantom DIR] [--work DIR] [--steps 3] [--batch 16] [--threads 2]
        [--jobs 2] [--runtime openvino|ort] [--skip network,archive,procs]
        [--dicom ../shared/data/dicom]

Random-init checkpoints (speed does not depend on the weights): ``msiqa`` is the full MS-IQA
with its paper preprocessing (224 x 224 resize), the model ``petctiqa score`` is used with by
default; ``petct-cnn`` with the CPU preset's preprocessing (the whole 512 x 512 render), the
CPU-class model. Every runtime uses ``--threads`` threads; the archive and procs parts use
``--runtime`` (default: the one ``score --runtime auto`` prefers). Prints, in one run:

1. ``network``: MS-IQA images/s at ``--batch`` for eager, ONNX Runtime and OpenVINO, timed
   alternately (eager, ort, openvino, eager, ...) so that drift on a shared machine hits all
   alike, each against eager pair by pair, and the float32 roofline: the network's FLOPs per
   image against this CPU's best float32 matrix-product rate on ``--threads`` threads (the
   images/s no float32 runtime can exceed here);
2. ``archive``: per model, side by side, the pure-model images/s (``--runtime``, same batch,
   threads and input size, inputs already in memory; timed before and after the archive run)
   and archive-scoring images/s on the phantom's studies (``score_archive`` in this process:
   walk, worker start, session load, rendering, preprocessing, model, journal, merge and
   output; model weights already loaded), their ratio, where the archive run's time went
   (before the first batch, model busy, the model's rate inside the run), and the CPU time
   rendering costs per slice (one process, measured apart), with the ratio two cores allow if
   model and rendering shared them perfectly;
3. ``procs``: ``petctiqa score PHANTOM --out x.csv`` (first model) as one process, then
   ``torchrun --nproc_per_node 2``, then one process again: wall time of each whole command
   (start, model load, walk, scoring, output), and whether all wrote the same file;
4. with ``--dicom``: studies/min of the one-process command on that archive.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
# Workers started from here import this file again (multiprocessing's fork server runs the
# main module in each): the library is imported inside the functions, not at the top.


def make_checkpoint(name: str, path: Path) -> Path:
    import torch

    from petctiqa.iqa.checkpoint import save_checkpoint
    from petctiqa.iqa.preprocess import Preprocessing
    from petctiqa.iqa.presets import CPU_CROP
    from petctiqa.models import get_model_entry

    preprocessing = {"msiqa": Preprocessing(size=224), "petct-cnn": CPU_CROP}[name]
    if path.is_file():  # same bytes as before: the ONNX export cache stays valid
        return path
    entry = get_model_entry(name)
    config = entry.default_config()
    torch.manual_seed(0)
    save_checkpoint(
        path,
        {
            "model_name": name,
            "config": config.to_dict(),
            "label_scale": {"low": 0.0, "high": 4.0},
            "model": entry.build(config).eval().state_dict(),
            "preprocessing": preprocessing.to_dict(),
        },
    )
    return path


class TimedModel:
    """Wraps the runtime's model: when each batch ran and for how long."""

    def __init__(self, model) -> None:
        self.model = model
        self.calls: list[tuple[int, float, float]] = []

    def eval(self) -> TimedModel:
        return self

    def warm(self, shapes) -> None:
        if hasattr(self.model, "warm"):
            self.model.warm(shapes)

    def forward_parts(self, x):
        start = time.perf_counter()
        out = self.model.forward_parts(x)
        self.calls.append((len(x), start, time.perf_counter()))
        return out


def sgemm_peak(threads: int, n: int = 2048, repeats: int = 8) -> float:
    """Best GFLOP/s of a float32 n x n matrix product on ``threads`` threads: the roof that no
    float32 network on this CPU gets above."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def network_flops(model, shape: tuple[int, ...]) -> float:
    """Floating-point operations of one forward pass for one input of ``shape`` (torch's count:
    2 per multiply-add of convolutions and matrix products)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.forward_parts(torch.zeros(1, *shape))
    return float(counter.get_total_flops())


def network_speed(checkpoint: Path, cache: Path, steps: int, batch: int, threads: int) -> None:
    import torch

    from petctiqa.iqa.score import Scorer
    from petctiqa.scoring.runtime import ONNX_RUNTIMES, runtime_available

    scorer = Scorer(checkpoint, "cpu")
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        reference = scorer.model.forward_parts(x)["score"]
    models = {"eager": scorer.model}
    for name in reversed(ONNX_RUNTIMES):  # ort first: it makes the export both read
        if not runtime_available(name):
            print(f"{name}: not installed")
            continue
        start = time.perf_counter()
        models[name], _, _ = scorer.runtime_model(name, 1, batch, cache_dir=cache)
        models[name].warm(scorer.input_shapes())
        print(f"{name}: ONNX export (unless cached) + session: {time.perf_counter() - start:.1f} s")
        with torch.inference_mode():
            fast = models[name].forward_parts(x)["score"]
        print(
            f"{name}: max |{name} - eager| on the 0..4 scale: {4 * (fast - reference).abs().max():.2e}"
        )
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(steps):
        for name, model in models.items():  # alternating: drift on a shared CPU hits all alike
            with torch.inference_mode():
                start = time.perf_counter()
                model.forward_parts(x)
            rates[name].append(batch / (time.perf_counter() - start))
    flops = network_flops(scorer.model, (3, 224, 224))
    peak = sgemm_peak(threads)
    ceiling = peak * 1e9 / flops
    print(
        f"roofline: {flops / 1e9:.2f} GFLOP per image; float32 matrix product peak on {threads} "
        f"threads {peak:.1f} GFLOP/s -> at most {ceiling:.2f} images/s in float32"
    )
    for name, values in rates.items():
        ratios = [v / e for v, e in zip(values, rates["eager"], strict=True)]
        print(
            f"{name}: {', '.join(f'{v:.2f}' for v in values)} images/s; vs eager, pair by pair: "
            f"{', '.join(f'{r:.2f}x' for r in ratios)}; best = {max(values) / ceiling:.0%} of the roof"
        )


def pure_rate(model, shape: tuple[int, ...], batch: int, steps: int) -> float:
    """images/s of ``model`` on in-memory inputs of ``shape`` (one batch first, untimed)."""
    import torch

    from petctiqa.iqa.inference import forward_batch

    x = np.random.default_rng(0).normal(size=(batch, *shape)).astype(np.float32)
    device = torch.device("cpu")
    forward_batch(model, x, device)
    start = time.perf_counter()
    for _ in range(steps):
        forward_batch(model, x, device)
    return batch * steps / (time.perf_counter() - start)


def render_cost(units, scorer, stride: int) -> tuple[float, tuple[int, ...]]:
    """(CPU seconds per slice to load, render and preprocess, network-input shape), from the
    first study in this process (what one worker spends per slice)."""
    from petctiqa.iqa.preprocess import grid_crops, rgb_to_array
    from petctiqa.iqa.score import render_pair_slices

    pair = next(u for u in units if u.kind == "study").pair
    start = time.process_time()
    count = 0
    for _, rgb in render_pair_slices(pair, stride, scorer.render_settings):
        stack = grid_crops(
            rgb_to_array(rgb, preprocessing=scorer.preprocessing), scorer.preprocessing
        )
        count += len(stack)
    return (time.process_time() - start) / count, tuple(stack.shape[1:])


def archive_vs_model(name: str, checkpoint: Path, phantom: Path, work: Path, args) -> None:
    from petctiqa.iqa.score import Scorer
    from petctiqa.scoring.archive import ArchiveOptions, score_archive, start_worker_imports
    from petctiqa.scoring.walk import walk_inputs

    scorer = Scorer(checkpoint, "cpu")
    start = time.perf_counter()
    units = walk_inputs([phantom], args.slice_stride)
    walk = time.perf_counter() - start
    render, shape = render_cost(units, scorer, args.slice_stride)
    ready, _, _ = scorer.runtime_model(args.runtime, 1, args.batch, cache_dir=work / "onnx")
    before = pure_rate(ready, shape, args.batch, args.steps)
    fresh, _, _ = scorer.runtime_model(args.runtime, 1, args.batch, cache_dir=work / "onnx")
    timed = TimedModel(fresh)
    options = ArchiveOptions(args.batch, args.slice_stride, 2.0, args.jobs)
    out = work / f"archive-{name}.csv"
    remove_output(out)
    start = time.perf_counter()
    start_worker_imports(args.jobs)  # as the CLI does
    score_archive(scorer, [phantom], out, timed, options)
    wall = time.perf_counter() - start
    after = pure_rate(ready, shape, args.batch, args.steps)
    images = sum(n for n, _, _ in timed.calls)
    busy = sum(end - begin for _, begin, end in timed.calls)
    archive = images / wall
    pure = (before + after) / 2
    model_cpu = args.threads / pure  # CPU seconds per image if the threads keep the cores busy
    print(
        f"{name} {shape[1]}x{shape[2]}: pure model {before:.2f} / {after:.2f} images/s "
        f"(before / after); archive {images} slices of {len(units)} studies in {wall:.1f} s = "
        f"{archive:.2f} images/s; archive / pure = {archive / pure:.2f}"
    )
    first = timed.calls[0][1] - start
    print(
        f"  archive run: {first:.1f} s before the first batch (the walk alone: {walk:.1f} s), "
        f"then {images / (wall - first):.2f} images/s = {images / (wall - first) / pure:.2f} of "
        f"pure; model busy {busy / wall:.0%} of the run at {images / busy:.2f} images/s; "
        f"{sum(1 for n, _, _ in timed.calls if n < args.batch)} of {len(timed.calls)} batches short"
    )
    print(
        f"  rendering: {render * 1000:.0f} ms CPU per slice (load, render, preprocess), model "
        f"{model_cpu * 1000:.0f} ms CPU per image -> two cores shared perfectly allow "
        f"archive / pure <= {model_cpu / (model_cpu + render):.2f}"
    )
    remove_output(out)


def remove_output(out: Path) -> None:
    """``out`` and its journal: every timed run scores from scratch."""
    import shutil

    out.unlink(missing_ok=True)
    shutil.rmtree(out.with_name(out.name + ".journal"), ignore_errors=True)


def score_command(archive: Path, checkpoint: Path, out: Path, args, procs: int) -> list[str]:
    base = ["score", str(archive), "--checkpoint", str(checkpoint), "--out", str(out),
            "--device", "cpu", "--runtime", args.runtime, "--slice-stride", str(args.slice_stride),
            "--batch-size", str(args.batch), "--jobs", str(args.jobs)]  # fmt: skip
    if procs == 1:
        return [str(BIN / "petctiqa"), *base]
    return [str(BIN / "torchrun"), "--standalone", "--nnodes", "1", "--nproc_per_node",
            str(procs), "-m", "petctiqa_cli.main", *base]  # fmt: skip


def timed_command(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr[-2000:])
    return time.perf_counter() - start


def processes(checkpoint: Path, phantom: Path, work: Path, args) -> None:
    env = {**os.environ, "PETCTIQA_ONNX_CACHE": str(work / "onnx")}
    env.pop("OMP_NUM_THREADS", None)
    # 1, 2, then 1 process again: load that changes during the runs shows as a spread
    outs = [work / "procs-1.csv", work / "procs-2.csv", work / "procs-1b.csv"]
    seconds = []
    for out, procs in zip(outs, (1, 2, 1), strict=True):
        remove_output(out)  # a journal left by an earlier run would be resumed
        seconds.append(timed_command(score_command(phantom, checkpoint, out, args, procs), env))
    same = outs[0].read_text() == outs[1].read_text() == outs[2].read_text()
    slices = sum(1 for line in outs[0].read_text().splitlines() if line.startswith("slice,"))
    print(
        f"{checkpoint.stem}, {slices} slices, whole command: 1 process {seconds[0]:.1f} s, "
        f"torchrun 2 processes {seconds[1]:.1f} s, 1 process again {seconds[2]:.1f} s: speed-up "
        f"{seconds[0] / seconds[1]:.2f}x / {seconds[2] / seconds[1]:.2f}x; same output: {same}"
    )


def dicom_speed(checkpoint: Path, folder: Path, work: Path, args) -> None:
    """Studies/min of the whole one-process command on another archive (``--dicom``)."""
    env = {**os.environ, "PETCTIQA_ONNX_CACHE": str(work / "onnx")}
    out = work / "dicom.csv"
    remove_output(out)
    seconds = timed_command(score_command(folder, checkpoint, out, args, 1), env)
    lines = out.read_text().splitlines()
    studies = sum(1 for line in lines if line.startswith("study,"))
    slices = sum(1 for line in lines if line.startswith("slice,"))
    print(
        f"{folder}: {studies} studies, {slices} slices in {seconds:.1f} s = "
        f"{60 * studies / seconds:.2f} studies/min (whole command, 1 process, {checkpoint.stem})"
    )


def phantom_archive(args, work: Path) -> Path:
    if args.phantom:
        return Path(args.phantom)
    folder = work / "phantom"
    if not folder.is_dir():
        command = [str(BIN / "petctiqa"), "phantom", "--out", str(folder), "--patients",
                   str(args.patients)]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="msiqa,petct-cnn")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--phantom", default="", help="an existing phantom archive to score")
    parser.add_argument("--work", default="", help="keep checkpoints and ONNX exports here")
    parser.add_argument("--slice-stride", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--runtime",
        default="",
        help="ONNX runtime of the archive and procs parts [default: the "
        "one score's auto prefers among those installed: openvino, else ort]",
    )
    parser.add_argument("--dicom", default="", help="also time the command on this archive")
    parser.add_argument("--skip", default="", help="comma list of network, archive, procs")
    parser.add_argument("--network-only", action="store_true", help="= --skip archive,procs")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.network_only:
        skip |= {"archive", "procs"}
    import torch

    from petctiqa.scoring.runtime import ONNX_RUNTIMES, runtime_available

    args.runtime = args.runtime or next(n for n in ONNX_RUNTIMES if runtime_available(n))
    torch.set_num_threads(args.threads)
    print(
        f"threads={args.threads} batch={args.batch} jobs={args.jobs} cores={os.cpu_count()} "
        f"stride={args.slice_stride} runtime={args.runtime} load={os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as folder:
        work = Path(args.work or folder)
        work.mkdir(parents=True, exist_ok=True)
        names = args.models.split(",")
        checkpoints = {n: make_checkpoint(n, work / f"{n}.pt") for n in names}
        if "network" not in skip and "msiqa" in checkpoints:
            network_speed(checkpoints["msiqa"], work / "onnx", args.steps, args.batch, args.threads)
        phantom = phantom_archive(args, work)
        if "archive" not in skip:
            for name in names:
                archive_vs_model(name, checkpoints[name], phantom, work, args)
        if "procs" not in skip:
            processes(checkpoints[names[0]], phantom, work, args)
        if args.dicom:
            dicom_speed(checkpoints[names[0]], Path(args.dicom), work, args)
    print(f"load={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
