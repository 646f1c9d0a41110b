"""Benchmark: a `pet-ct-lowdose` phantom build (PET/CT-domain distortions), and its
extrapolation to the full 2,700-image set (target: 5 min on 2 cores).

The build runs in this process as the CLI runs it (worker start-up included) on the
built-in phantom (512 x 512 CT, generated into the phantom cache first and not timed), for
``--patients`` x ``--slices`` x 27 images with ``--jobs`` workers. It prints the wall time, the
summed worker time of the patient tasks (cut the slice, PET/CT-domain distortions, the 27
renders per slice, PNGs) and of the slice tasks (JPEG files, contact sheets), per slice, and the
full build's time extrapolated from the per-slice worker time:

    full = index + 100 slices x (patient + slice task seconds per slice) / jobs

With ``--jobs 1`` every task runs in this process, so its CPU time (``time.process_time``, all
threads) is measured too; that is the figure to extrapolate from on a shared machine, where
other jobs stretch wall times but hardly the CPU a task needs:

    full_cpu = index + 100 slices x (CPU seconds per slice) / 2 cores

where ``index`` is this run's time to index the DICOM headers (20 patients take longer). The
extrapolation assumes the workers stay busy, as they do when 20 patients keep 2 workers fed (a
small run is not: the first patients are prepared in the main process while the pool starts, so
its wall time says little); a full run (``--patients 20 --slices 5``) measures it directly.

Run:  .venv/bin/python benchmarks/lowdose_build.py [--patients 2] [--slices 5] [--jobs 2]
      [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

FULL_SLICES = 100
TARGET_S = 300.0


def _phantom(patients: int) -> None:
    """Generate the phantom into its cache first (untimed), as the build would."""
    from petctiqa.dataset.phantom_cache import ensure_phantom

    ensure_phantom(None, patients, 0, False, lambda message: None)


def _build(out: Path, patients: int, slices: int, jobs: int):
    """The build, in this process as the CLI runs it (its workers are forked processes)."""
    from petctiqa.dataset.build import BuildOptions, build_dataset
    from petctiqa.protocol import load_dataset_protocol

    options = BuildOptions(
        out_dir=out,
        protocol=load_dataset_protocol("pet-ct-lowdose"),
        patients=patients,
        slices=slices,
        jobs=jobs,
    )
    return build_dataset(options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=2)
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")  # fmt: skip
    _phantom(args.patients)
    root = Path(tempfile.mkdtemp(prefix="lowdose-bench-"))
    try:
        out = root / "ds"
        cpu_started = time.process_time()
        summary = _build(out, args.patients, args.slices, args.jobs)
        cpu = time.process_time() - cpu_started
        wall = summary.seconds
        patient_s, slice_s = summary.patient_task_seconds, summary.slice_task_seconds
        n_slices = args.patients * args.slices
        per_slice = (patient_s + slice_s) / n_slices
        fixed = summary.index_seconds
        full = fixed + FULL_SLICES * per_slice / args.jobs
        result = {
            "patients": args.patients,
            "slices": n_slices,
            "images": n_slices * 27,
            "jobs": args.jobs,
            "wall_s": round(wall, 1),
            "patient_task_s_per_slice": round(patient_s / n_slices, 2),
            "slice_task_s_per_slice": round(slice_s / n_slices, 2),
            "index_s": round(fixed, 1),
            "full_2700_extrapolated_s": round(full, 0),
            "target_s": TARGET_S,
            "within_target": full <= TARGET_S,
        }
        if args.jobs == 1:
            cpu_per_slice = cpu / n_slices
            result["cpu_s_per_slice"] = round(cpu_per_slice, 2)
            result["full_2700_on_2_cores_from_cpu_s"] = round(
                fixed + FULL_SLICES * cpu_per_slice / 2, 0
            )
        print(json.dumps(result, indent=2))
        if args.keep:
            shutil.copytree(out, args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
