"""Benchmark: the full 2,700-image phantom build against a straightforward NumPy reference.

Prints the machine, then
  1. phantom generation time (20 patients, timed on its own and flushed to disk, not part of the
     build figure);
  2. the whole `build-dataset` run on that phantom (index, load, select, render, 27 distortions
     per slice, contact sheets, manifest) with --jobs cores: images/s and seconds;
  3. on the same reference renders, single-process images/s of
     ``petctiqa.distort.reference_distort_image`` (a Poisson draw for every channel value, a float64
     normal draw, PIL JPEG) and of the fast ``distort_image`` that the build uses;
  4. the speed-up of the build over the reference (target >= 5x) and whether the whole build took
     under 60 s (the target is stated for 2 cores).

Run:  .venv/bin/python benchmarks/build_dataset.py [--jobs N] [--reference-slices K] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from petctiqa.dataset.build import BuildOptions, available_cores, build_dataset
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
    parser.add_argument("--keep", type=Path, default=None, help="keep the dataset in this folder")
    args = parser.parse_args()
    jobs = args.jobs or available_cores()
    print(machine_info())
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

        out = args.keep or work / "dataset"
        if out.exists():
            shutil.rmtree(out)
        protocol = load_dataset_protocol("pet-ct-iqa-ds")
        options = BuildOptions(
            out_dir=out,
            protocol=protocol,
            src=phantom,
            seed=args.seed,
            jobs=jobs,
            patients=args.patients,
            slices=args.slices,
        )
        summary = build_dataset(options)
        build_rate = summary.images / summary.seconds
        print(
            f"build-dataset --jobs {jobs}: {summary.images} images in {summary.seconds:.1f} s "
            f"= {build_rate:.1f} images/s (whole build: index, load, render, distort, sheets)"
        )
        print(
            f"  breakdown: index+pair {summary.index_seconds:.1f} s wall; worker time "
            f"{summary.patient_task_seconds:.1f} s in patient tasks (load CT+PET, select, render "
            f"100 references), {summary.slice_task_seconds:.1f} s in slice tasks (27 distortions, "
            f"atomic writes, contact sheet) = "
            f"{summary.images / summary.slice_task_seconds:.1f} images per worker-second"
        )
        started = time.perf_counter()
        verify = build_dataset(options)
        print(
            f"rerun (resume/verify, nothing to do): {verify.images_verified} images verified in "
            f"{time.perf_counter() - started:.1f} s"
        )

        records = read_manifest(out / "manifest.csv")
        slice_refs = sorted({(r.slice_id, r.reference) for r in records})
        if args.reference_slices:
            slice_refs = slice_refs[: args.reference_slices]
        references = [
            (sid, np.asarray(Image.open(io.BytesIO((out / ref).read_bytes())).convert("RGB")))
            for sid, ref in slice_refs
        ]
        specs = distortion_grid(protocol.distortions)
        n = len(references) * len(specs)
        reference_s = time_distortions(references, specs, args.seed, reference_distort_image)
        fast_s = time_distortions(references, specs, args.seed, distort_image)
        reference_rate, fast_rate = n / reference_s, n / fast_s
        print(
            f"NumPy reference (reference_distort_image, 1 process): {n} images in "
            f"{reference_s:.1f} s = {reference_rate:.1f} images/s"
        )
        print(
            f"petctiqa distort_image (1 process, same renders): {n} images in {fast_s:.1f} s = "
            f"{fast_rate:.1f} images/s ({fast_rate / reference_rate:.1f}x the reference)"
        )
        stage_rate = summary.images / summary.slice_task_seconds * jobs
        print(
            f"distortion stage of the build (slice tasks incl. writes and sheets, {jobs} workers): "
            f"{stage_rate:.1f} images/s = {stage_rate / reference_rate:.1f}x the reference"
        )
        speedup = build_rate / reference_rate
        print(
            f"speed-up of the whole build over the reference: {speedup:.1f}x "
            f"(target >= {TARGET_SPEEDUP:.0f}x: {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'})"
        )
        under = summary.seconds < TARGET_SECONDS
        print(
            f"whole build {summary.seconds:.1f} s on {jobs} workers / {available_cores()} cores: "
            f"{'under' if under else 'NOT under'} {TARGET_SECONDS:.0f} s "
            f"(target stated for 2 cores)"
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
