"""Build a PET-CT-IQA-DS-style dataset: parallel, deterministic, resumable.

The build indexes the DICOM source and chooses its patients (:mod:`.candidates`), checks the
output folder against an earlier run (:mod:`.resume`), runs one task per patient and one per
slice on a worker pool (:mod:`.schedule`, :mod:`.tasks`, :mod:`petctiqa.pool`) and writes
``manifest.csv``, ``split.csv`` and ``dataset.json`` only once every image is in place.

Every file is written atomically and recorded with its sha256 under ``.build-state/``, so a
rerun with the same settings verifies finished files by hash and redoes only what is missing
or damaged: the result is byte-identical for any number of workers and after any interruption.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from petctiqa import __version__
from petctiqa.dataset.axes_records import axes_records
from petctiqa.dataset.candidates import choose_candidates, scan_source, substitutions
from petctiqa.dataset.layout import (
    DATASET_JSON,
    IMAGE_SUFFIX,
    STATE_DIR,
    check_output_folders,
    image_rel_path,
    remove_stale_temporaries,
    write_json,
)
from petctiqa.dataset.manifest import MANIFEST_NAME, ImageRecord, write_manifest
from petctiqa.dataset.phantom_cache import ensure_phantom, legacy_phantom_note
from petctiqa.dataset.records import BuildOptions, BuildSummary, PreparedPatient, SliceOutcome
from petctiqa.dataset.resume import (
    SOURCE_SERIES_KEY,
    build_settings,
    check_settings,
    check_source_series,
    source_series,
)
from petctiqa.dataset.schedule import Job, Progress, Scheduler
from petctiqa.dataset.split import SPLIT_NAME, split_patients, write_split
from petctiqa.dataset.tasks import prepare_patient
from petctiqa.distort import slice_specs
from petctiqa.errors import DatasetError
from petctiqa.pool import (
    BackgroundFlush,
    available_cores,
    process_pool,
    start_workers,
    watch_main_process,
)

__all__ = [  # the names callers import from here
    "BackgroundFlush",
    "BuildOptions",
    "BuildSummary",
    "available_cores",
    "build_dataset",
    "check_source_series",
    "prepare_patient",
    "remove_stale_temporaries",
    "start_workers",
]

DATASET_FORMAT_VERSION = 1
WORKER_MODULES = (
    "petctiqa.dataset.build",
    "petctiqa.dataset.tasks",
    "petctiqa.dataset.select",
    "petctiqa.dicom.volume",
    "petctiqa.distort",
    "petctiqa.noise_kernel",
    "petctiqa.render",
    "scipy.special",
)
"""What the workers import before their first task (preloaded once by the fork server;
scipy.special is imported lazily by petctiqa.distort, which the main process needs without it)."""

Log = Callable[[str], None]


def _init_worker(main_pid: int, cwd: str) -> None:
    """Worker initializer: one OpenCV thread per worker (the pool already uses every core) and
    the watchdog that ends this worker when the main process dies."""
    cv2.setNumThreads(1)
    watch_main_process(main_pid, cwd)


def _executor(jobs: int) -> Executor:
    """The build's worker pool (:func:`petctiqa.pool.process_pool`): in-process for one job,
    else ``jobs`` workers forked from a fork server that preloads ``WORKER_MODULES`` once."""
    return process_pool(jobs, WORKER_MODULES, _init_worker)


@dataclass(frozen=True)
class _Resolved:
    """``BuildOptions`` with every default taken from the protocol, checked."""

    out_dir: Path
    n_patients: int
    slices: int
    image_format: str
    jobs: int
    specs: tuple
    settings: dict


def _resolve(options: BuildOptions) -> _Resolved:
    protocol = options.protocol
    out_dir = Path(options.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"{out_dir}: output path exists and is not a folder")
    n_patients = options.patients or (
        len(options.patient_list) if options.patient_list else protocol.selection.patients
    )
    k = options.slices or protocol.selection.slices_per_patient
    image_format = options.image_format or protocol.output.image_format
    if image_format not in IMAGE_SUFFIX:
        raise DatasetError(f"image format must be jpeg or png, got {image_format!r}")
    if n_patients < 1 or k < 1:
        raise DatasetError(f"patients and slices must be >= 1, got {n_patients} and {k}")
    settings = build_settings(options, n_patients, k, image_format)
    # one slice's images (the count is the same for every slice; a continuous design draws
    # each slice's own values in its tasks)
    specs = tuple(slice_specs(protocol.distortions, options.seed, ""))
    jobs = options.jobs or available_cores()
    return _Resolved(out_dir, n_patients, k, image_format, jobs, specs, settings)


def _source(options: BuildOptions, run: _Resolved, log: Log) -> Path:
    """The DICOM tree to build from: ``options.src``, or the phantom (generated once into its cache;
    an earlier build's settings are checked first, as nothing may be written before)."""
    if options.src is not None:
        return Path(options.src)
    check_settings(run.out_dir, run.settings)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    src = ensure_phantom(options.phantom_cache, run.n_patients, options.seed, options.progress, log)
    note = legacy_phantom_note(run.out_dir)
    if note:
        log(note)
    return src


def _open_output(run: _Resolved, series: dict, log: Log) -> None:
    """Check the output folder against an earlier build, then claim it for this one."""
    check_settings(run.out_dir, run.settings)
    check_source_series(run.out_dir, series)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    check_output_folders(run.out_dir)
    removed = remove_stale_temporaries(run.out_dir)
    if removed:
        noun = "file" if removed == 1 else "files"
        log(f"removed {removed} temporary {noun} left by an interrupted build in {run.out_dir}")
    build_json = {**run.settings, SOURCE_SERIES_KEY: series}
    write_json(run.out_dir / STATE_DIR / "build.json", build_json)


def _progress_bar(total: int, enabled: bool):
    return tqdm(total=total, unit="img", desc="build-dataset", disable=not enabled, leave=True)


def build_dataset(options: BuildOptions, log: Log | None = None) -> BuildSummary:
    """Build (or resume, or verify) the dataset described by ``options``.

    Returns only when every image, reference, contact sheet, ``manifest.csv``, ``split.csv`` and
    ``dataset.json`` is in place; any user-caused problem raises a :class:`PetctiqaError`
    subclass whose message names the file or field, leaving earlier output intact. Problems
    with the input are reported before a clash with an earlier build's settings, both before
    anything is written.
    """
    log = log or (lambda message: None)
    started = time.perf_counter()
    run = _resolve(options)
    src = _source(options, run, log)
    phantom_seconds = time.perf_counter() - started
    # The pool's workers start (a thread waits for the fork server's imports) while this
    # process indexes the DICOM headers itself, which is faster than shipping the results back
    # from workers (docs/dataset.md, "Speed").
    executor = _executor(run.jobs)
    starter = threading.Thread(target=start_workers, args=(executor, run.jobs), daemon=True)
    starter.start()
    total = run.n_patients * run.slices * len(run.specs)
    bar = None
    try:
        scan = scan_source(src, options.progress, log)
        index_seconds = time.perf_counter() - started - phantom_seconds
        chosen = choose_candidates(
            src, scan, options.seed, options.patient_list, run.n_patients, log
        )
        _open_output(run, source_series(chosen.pairs), log)
        job = Job(
            run.out_dir, options.protocol, run.n_patients, run.slices, run.specs, options.seed,
            run.image_format,
        )  # fmt: skip
        flusher = BackgroundFlush(total)
        bar = _progress_bar(total, options.progress)
        scheduler = Scheduler(job, chosen, scan.damaged, executor, starter, prepare_patient, log)
        done = scheduler.run(bar, flusher)
    except BaseException:
        starter.join()
        executor.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
        raise
    starter.join()
    executor.shutdown(wait=True)
    bar.close()
    if len(done.patients) < run.n_patients:
        reasons = "; ".join(done.passed_over.values()) or "not enough candidates"
        raise DatasetError(
            f"{src}: only {len(done.patients)} of {run.n_patients} requested patients have "
            f"{run.slices} usable slices ({reasons})"
        )
    images = _write_tables(options, run, src, done, flusher)
    written = sum(o.written for o in done.outcomes.values())
    return BuildSummary(
        out_dir=run.out_dir,
        source=src,
        used_phantom=options.src is None,
        patients=tuple(sorted(done.patients)),
        slices=len(done.patients) * run.slices,
        images=images,
        images_written=written,
        images_verified=images - written,
        seconds=time.perf_counter() - started,
        phantom_seconds=phantom_seconds,
        index_seconds=index_seconds,
        patient_task_seconds=done.task_seconds["patient"],
        slice_task_seconds=done.task_seconds["slice"],
        substitutions=substitutions(
            chosen.order, run.n_patients, list(done.patients), done.passed_over
        ),
    )


def _write_tables(
    options: BuildOptions, run: _Resolved, src: Path, done: Progress, flusher: BackgroundFlush
) -> int:
    """Write ``manifest.csv``, ``split.csv`` and ``dataset.json`` (after flushing the images);
    returns the number of images."""
    protocol = options.protocol
    patients = list(done.patients.values())
    if protocol.distortions.axes is None:
        records = _records(
            patients, run.specs, done.outcomes, options.seed, run.image_format,
            protocol.distortions.poisson_form,
        )  # fmt: skip
    else:
        records = axes_records(
            patients, protocol.distortions, done.outcomes, options.seed, run.image_format
        )
    expected = run.n_patients * run.slices * len(run.specs)
    if len(records) != expected:  # a bug, not a user error
        raise RuntimeError(f"built {len(records)} images, expected {expected}")
    split = split_patients(list(done.patients), protocol.output.test_fraction, options.seed)
    flusher.finish()  # images were written without fsync: on disk before the manifest
    write_manifest(run.out_dir / MANIFEST_NAME, records)
    write_split(run.out_dir / SPLIT_NAME, split)
    n = len(done.patients)
    write_json(
        run.out_dir / DATASET_JSON,
        {
            "format_version": DATASET_FORMAT_VERSION,
            "petctiqa_version": __version__,
            "protocol": protocol.name,
            "protocol_source": protocol.source,
            "seed": options.seed,
            "image_format": run.image_format,
            "source": str(src),
            "source_kind": "phantom" if options.src is None else "dicom",
            "counts": {
                "patients": n,
                "slices_per_patient": run.slices,
                "slices": n * run.slices,
                "distortions": len(run.specs),
                "images": len(records),
                "train_patients": sum(v == "train" for v in split.values()),
                "test_patients": sum(v == "test" for v in split.values()),
            },
            "patients": sorted(done.patients),
            "files": {"manifest": MANIFEST_NAME, "split": SPLIT_NAME},
            "settings": run.settings,
        },
    )
    return len(records)


def _records(
    plans: list[PreparedPatient],
    specs: tuple,
    outcomes: dict[str, SliceOutcome],
    seed: int,
    image_format: str,
    poisson_form: str,
) -> list[ImageRecord]:
    records = []
    for plan in sorted(plans, key=lambda p: p.patient_id):
        for item in plan.slices:
            hashes = dict(outcomes[item.slice_id].image_sha256)
            for spec in specs:
                image_id = f"{item.slice_id}_{spec.code}"
                records.append(
                    ImageRecord(
                        image=image_rel_path(image_id, image_format),
                        image_id=image_id,
                        **plan.provenance(item),
                        poisson_level=spec.poisson_level,
                        gaussian_level=spec.gaussian_level,
                        jpeg_level=spec.jpeg_level,
                        poisson_form=poisson_form,
                        poisson_value=float(spec.poisson_value),
                        gaussian_sigma=float(spec.gaussian_sigma),
                        jpeg_quality=int(spec.jpeg_quality),
                        seed=seed,
                        sha256=hashes[image_id],
                    )
                )
    return records
