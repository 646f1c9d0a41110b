"""Benchmark: the full 2,700-image phantom build against a straightforward NumPy reference.

Prints the machine, then
  1. phantom generation time (20 patients, timed on its own and flushed to disk, not part of the
     build figure);
  2. ``--repeats`` times (default 3): the whole `build-dataset` run on that phantom (index, load,
     select, render, 27 distortions per slice, contact sheets, manifest) with --jobs workers, in
     a fresh Python process as the CLI runs it (worker start-up included), then, right after it,
     single-process images/s of ``petctiqa.distort.reference_distort_image`` on the same reference
     renders (a Poisson draw for every channel value, a float64 normal draw, PIL JPEG), and the
     build's speed-up over that reference timing;
  3. a verifying rerun, and the fast ``distort_image`` the build uses on the same renders;
  4. the median speed-up (target >= 5x) and whether the whole build took under 60 s (the target
     is stated for 2 cores).

Why repeats, each against its own reference timing: on a shared VM the speed of both drifts by
up to a third within minutes; a ratio taken from timings minutes apart measures the drift.

Run:  .venv/bin/python benchmarks/build_dataset.py [--jobs N] [--repeats R]
      [--reference-slices K] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from petctiqa.dataset.build import available_cores
from petctiqa.dataset.manifest import read_manifest
from petctiqa.distort import distort_image, distortion_grid, reference_distort_image
from petctiqa.phantom import write_phantom_tree
from petctiqa.protocol import load_dataset_protocol
from petctiqa.seeding import rng_for

TARGET_SPEEDUP = 5.0
TARGET_SECONDS = 60.0


def machine_info() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import PIL

    return (
        f"machine: {platform.platform()}; {model}; {available_cores()} usable cores "
        f"(os.cpu_count {os.cpu_count()})\n"
        f"python {platform.python_version()}, numpy {np.__version__}, pillow {PIL.__version__}"
    )


def time_distortions(references: list[tuple[str, np.ndarray]], specs, seed: int, function) -> float:
    """Seconds to make all 27 images of every reference with ``function``, in this process."""
    started = time.perf_counter()
    for slice_id, image in references:
        for spec in specs:
            function(image, spec, rng_for(seed, f"{slice_id}_{spec.code}"), "jpeg", "4:2:0")
    return time.perf_counter() - started


BUILD_IN_FRESH_PROCESS = """
import json, sys
from pathlib import Path
from petctiqa.dataset.build import BuildOptions, build_dataset
from petctiqa.protocol import load_dataset_protocol
a = json.loads(sys.argv[1])
summary = build_dataset(BuildOptions(
    out_dir=Path(a["out"]), protocol=load_dataset_protocol("pet-ct-iqa-ds"), src=Path(a["src"]),
    seed=a["seed"], jobs=a["jobs"], patients=a["patients"], slices=a["slices"]))
print(json.dumps({k: getattr(summary, k) for k in (
    "images", "images_verified", "seconds", "index_seconds", "patient_task_seconds",
    "slice_task_seconds")}))
"""


def build_in_fresh_process(out: Path, phantom: Path, args: argparse.Namespace, jobs: int) -> dict:
    """Run one build in a new Python process, as the CLI does (its worker pool, fork server
    and imports included), and return its summary figures."""
    settings = {
        "out": str(out),
        "src": str(phantom),
        "seed": args.seed,
        "jobs": jobs,
        "patients": args.patients,
        "slices": args.slices,
    }
    done = subprocess.run(
        [sys.executable, "-c", BUILD_IN_FRESH_PROCESS, json.dumps(settings)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"build failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=None, help="build workers (default: all)")
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reference-slices",
        type=int,
        default=20,
        help="slices (x27 images) timed with the slow reference (default 20 = 540 images; 0 = all)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="builds, each followed by a reference timing (default 3; the median ratio counts)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the dataset in this folder")
    args = parser.parse_args()
    jobs = args.jobs or available_cores()
    print(machine_info())
    if args.keep is not None and args.keep.exists():
        shutil.rmtree(args.keep)  # before anything is timed, see below
    work = Path(tempfile.mkdtemp(prefix="petctiqa-bench-"))
    try:
        phantom = work / "phantom"
        started = time.perf_counter()
        write_phantom_tree(phantom, patients=args.patients, seed=args.seed)
        if hasattr(os, "sync"):
            # the phantom's ~570 MB are otherwise written back to disk during the build
            os.sync()
        phantom_s = time.perf_counter() - started
        print(
            f"phantom generation: {args.patients} patients in {phantom_s:.1f} s (not in the build)"
        )

        # Each repeat builds into a new folder and nothing is deleted until the end: on ext4
        # without a journal (this project's build VM) the inode allocator skips inodes deleted
        # in the last 1-6 minutes, one table lookup each, so deleting a 2,700-file build right
        # before the next makes every file creation of that next build slower.
        outs = [work / f"dataset-{repeat}" for repeat in range(1, args.repeats + 1)]
        if args.keep is not None:
            outs[-1] = args.keep
        out = outs[0]
        protocol = load_dataset_protocol("pet-ct-iqa-ds")
        specs = distortion_grid(protocol.distortions)
        references: list[tuple[str, np.ndarray]] = []
        ratios: list[float] = []
        summary: dict = {}
        for repeat, out in enumerate(outs, start=1):
            if hasattr(os, "sync"):
                os.sync()  # the previous build's files are not written back during this one
            summary = build_in_fresh_process(out, phantom, args, jobs)
            build_rate = summary["images"] / summary["seconds"]
            print(
                f"[{repeat}/{args.repeats}] build-dataset --jobs {jobs} (fresh process): "
                f"{summary['images']} images in {summary['seconds']:.1f} s = {build_rate:.1f} "
                f"images/s (whole build: index, load, render, distort, sheets)"
            )
            print(
                f"  breakdown: index+pair {summary['index_seconds']:.1f} s wall; worker time "
                f"{summary['patient_task_seconds']:.1f} s in patient tasks (load CT+PET, select, "
                f"render 100 references), {summary['slice_task_seconds']:.1f} s in slice tasks "
                f"(27 distortions, atomic writes, contact sheet)"
            )
            if not references:
                references = load_references(out, args.reference_slices)
            n = len(references) * len(specs)
            reference_s = time_distortions(references, specs, args.seed, reference_distort_image)
            reference_rate = n / reference_s
            ratios.append(build_rate / reference_rate)
            print(
                f"  NumPy reference (reference_distort_image, 1 process), right after: {n} "
                f"images in {reference_s:.1f} s = {reference_rate:.1f} images/s; "
                f"build / reference = {ratios[-1]:.2f}x"
            )

        verify = build_in_fresh_process(out, phantom, args, jobs)
        print(
            f"rerun (resume/verify, nothing to do): {verify['images_verified']} images verified "
            f"in {verify['seconds']:.1f} s"
        )
        n = len(references) * len(specs)
        fast_s = time_distortions(references, specs, args.seed, distort_image)
        fast_rate = n / fast_s
        print(
            f"petctiqa distort_image (1 process, same renders): {n} images in {fast_s:.1f} s = "
            f"{fast_rate:.1f} images/s ({fast_rate / reference_rate:.1f}x the last reference "
            f"timing)"
        )
        speedup = statistics.median(ratios)
        print(
            f"speed-up of the whole build over the reference: median {speedup:.2f}x of "
            f"{len(ratios)} (each build against the reference timed right after it: "
            f"{', '.join(f'{r:.2f}' for r in ratios)}; target >= {TARGET_SPEEDUP:.0f}x: "
            f"{'met' if speedup >= TARGET_SPEEDUP else 'NOT met'})"
        )
        under = summary["seconds"] < TARGET_SECONDS
        print(
            f"whole build {summary['seconds']:.1f} s on {jobs} workers / {available_cores()} "
            f"cores: {'under' if under else 'NOT under'} {TARGET_SECONDS:.0f} s "
            f"(target stated for 2 cores)"
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_references(out: Path, reference_slices: int) -> list[tuple[str, np.ndarray]]:
    """The built set's reference renders (the first ``reference_slices`` slices; 0 = all)."""
    records = read_manifest(out / "manifest.csv")
    slice_refs = sorted({(r.slice_id, r.reference) for r in records})
    if reference_slices:
        slice_refs = slice_refs[:reference_slices]
    return [
        (sid, np.asarray(Image.open(io.BytesIO((out / ref).read_bytes())).convert("RGB")))
        for sid, ref in slice_refs
    ]


if __name__ == "__main__":
    sys.exit(main())
