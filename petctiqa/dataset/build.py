"""Build a PET-CT-IQA-DS-style dataset: parallel, deterministic, resumable.

Work is done in two kinds of tasks, run by a process pool:

1. one task per patient (:func:`prepare_patient`): load the CT (HU) and PET (SUV) volumes once,
   choose the K slices, render each slice's undistorted reference once and write it as a
   lossless PNG (``references/<slice_id>.png``);
2. one task per slice (:func:`distort_slice`): read the reference, make its 27 distorted images
   (the generator of image ``<slice_id>_<code>`` is ``rng_for(seed, image_id)``), write them and
   the slice's contact sheet.

Every file is written atomically. After each task a small JSON state file under
``.build-state/`` records what was written and its sha256, so a rerun with the same settings
verifies finished files by hash and redoes only what is missing or damaged: the result is
byte-identical for any ``--jobs`` and after any interruption. ``manifest.csv``, ``split.csv``
and ``dataset.json`` are written (atomically) only once every image is in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2

from petctiqa import __version__
from petctiqa.atomic import atomic_write_bytes, atomic_write_text, temporary_target
from petctiqa.dataset.candidates import (
    Substitution,
    check_series_intact,
    choose_candidates,
    scan_source,
    substitutions,
)
from petctiqa.dataset.manifest import MANIFEST_NAME, ImageRecord, write_manifest
from petctiqa.dataset.phantom_cache import ensure_phantom, legacy_phantom_note
from petctiqa.dataset.select import (
    NoUsableSlices,
    body_fractions,
    choose_slices,
)
from petctiqa.dataset.sheets import (
    CROPS_DIR,
    SheetTile,
    read_sheets_digest,
    sheets_digest,
    slice_sheet_paths,
    slice_sheets_png,
)
from petctiqa.dataset.split import SPLIT_NAME, split_patients, write_split
from petctiqa.errors import DatasetError, DicomError
from petctiqa.png import encode_png_rgb
from petctiqa.pool import (
    BackgroundFlush,
    InlineExecutor,
    available_cores,
    process_pool,
    start_workers,
    timed,
    watch_main_process,
)
from petctiqa.protocol import DatasetProtocol, RenderSettings
from petctiqa.safe_paths import UnsafePathError, inside, join_component, safe_component
from petctiqa.seeding import rng_for

if TYPE_CHECKING:
    from petctiqa.dicom.pairing import PetCtPair
    from petctiqa.distort import DistortionSpec

STATE_DIR = ".build-state"
DATASET_JSON = "dataset.json"
IMAGE_SUFFIX = {"jpeg": ".jpg", "png": ".png"}
DATASET_FORMAT_VERSION = 1
WRITER_THREADS = 2
"""Threads per worker that write finished files while the worker computes the next image."""

WORKER_MODULES = (
    "petctiqa.dataset.build",
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


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class BuildOptions:
    """What to build and where. ``None`` means "take it from the protocol"."""

    out_dir: Path
    protocol: DatasetProtocol
    src: Path | None = None
    """DICOM tree; ``None`` uses the built-in phantom, generated once into ``phantom_cache``."""
    phantom_cache: Path | None = None
    """Folder of the phantom cache (outside the dataset); ``None``: ``$PETCTIQA_PHANTOM_CACHE``,
    ``$XDG_CACHE_HOME/petctiqa`` or ``~/.cache/petctiqa`` (see :mod:`.phantom_cache`)."""
    seed: int = 0
    jobs: int | None = None
    """Worker processes; ``None`` = all available cores; 1 runs everything in this process."""
    patients: int | None = None
    slices: int | None = None
    image_format: str | None = None
    patient_list: tuple[str, ...] | None = None
    """Explicit patient IDs, tried in this order (instead of the seeded order)."""
    progress: bool = False


@dataclass(frozen=True)
class SlicePlan:
    """One chosen CT slice and its reference render."""

    slice_id: str
    slice_number: int
    ct_index: int
    position_mm: float
    ct_sop_uid: str
    reference: str
    """Relative path of the reference PNG."""
    reference_sha256: str


@dataclass(frozen=True)
class PatientPlan:
    """A patient's PET/CT pair (by UID) and its K slices."""

    patient_id: str
    study_uid: str
    ct_series_uid: str
    pet_series_uid: str
    frame_of_reference_uid: str
    slices: tuple[SlicePlan, ...]


@dataclass(frozen=True)
class SliceOutcome:
    slice_id: str
    image_sha256: tuple[tuple[str, str], ...]
    """(image_id, sha256) for the 27 images in grid order."""
    written: int
    """Images (re)written by this task; the others were verified by hash."""


@dataclass(frozen=True)
class BuildSummary:
    out_dir: Path
    source: Path
    used_phantom: bool
    patients: tuple[str, ...]
    slices: int
    images: int
    images_written: int
    images_verified: int
    seconds: float
    """Wall time of the whole call (phantom generation included when it happened)."""
    phantom_seconds: float = 0.0
    index_seconds: float = 0.0
    """Wall time of indexing the DICOM tree and pairing (the workers start meanwhile)."""
    patient_task_seconds: float = 0.0
    """Summed worker time of the patient tasks (load volumes, choose slices, render)."""
    slice_task_seconds: float = 0.0
    """Summed worker time of the slice tasks (27 distortions, writes, contact sheet)."""
    substitutions: tuple[Substitution, ...] = ()
    """Patients taken because one earlier in the order could not be used, and why."""


# ----------------------------------------------------------------------------- small helpers


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str | None:
    """sha256 of a file's bytes, or ``None`` when it does not exist."""
    try:
        return sha256_hex(path.read_bytes())
    except FileNotFoundError:
        return None


def slice_id_for(patient_id: str, slice_number: int) -> str:
    """``<patient>_s<k>``, the patient ID made a safe file name (DICOM text never chooses a
    path: see :mod:`petctiqa.safe_paths`); the stem of every file of that slice."""
    return f"{safe_component(patient_id)}_s{slice_number}"


def image_rel_path(image_id: str, image_format: str) -> str:
    return f"images/{image_id}{IMAGE_SUFFIX[image_format]}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: Path, value: dict[str, Any], durable: bool = True) -> None:
    atomic_write_text(path, json.dumps(value, indent=2) + "\n", durable=durable)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


# ----------------------------------------------------------------------------- worker tasks


@dataclass(frozen=True)
class PatientTask:
    pair: PetCtPair
    out_dir: Path
    slices: int
    margin_fraction: float
    min_body_fraction: float
    render: RenderSettings


def prepare_patient(task: PatientTask) -> PatientPlan:
    """Load one patient's volumes, choose K slices and write their reference renders."""
    from petctiqa.dicom.suv import load_pet_suv
    from petctiqa.dicom.volume import load_volume
    from petctiqa.render import render_slice

    pair = task.pair
    ct = load_volume(pair.ct)
    pet = load_pet_suv(pair.pet)
    try:
        chosen = choose_slices(
            ct.slice_positions_mm,
            body_fractions(ct.array),
            pair.overlap_mm,
            task.slices,
            task.margin_fraction,
            task.min_body_fraction,
        )
    except NoUsableSlices as exc:
        raise NoUsableSlices(f"patient {pair.patient_id}: {exc}") from None
    positions = ct.slice_positions_mm
    plans = []
    for number, ct_index in enumerate(chosen, start=1):
        slice_id = slice_id_for(pair.patient_id, number)
        png = encode_png_rgb(render_slice(ct, pet, ct_index, task.render), "sub")
        reference = _reference_rel_path(slice_id)
        target = _out_file(task.out_dir, reference)
        if file_sha256(target) != sha256_hex(png):
            atomic_write_bytes(target, png, durable=False)  # see distort_slice
        plans.append(
            SlicePlan(
                slice_id=slice_id,
                slice_number=number,
                ct_index=int(ct_index),
                position_mm=round(float(positions[ct_index]), 3),
                ct_sop_uid=ct.sop_instance_uids[ct_index],
                reference=reference,
                reference_sha256=sha256_hex(png),
            )
        )
    plan = PatientPlan(
        patient_id=pair.patient_id,
        study_uid=pair.study_uid,
        ct_series_uid=pair.ct.series_uid,
        pet_series_uid=pair.pet.series_uid,
        frame_of_reference_uid=pair.frame_of_reference_uid,
        slices=tuple(plans),
    )
    _write_json(
        _patient_state_path(task.out_dir, pair.patient_id), dataclasses.asdict(plan), durable=False
    )
    return plan


@dataclass(frozen=True)
class SliceTask:
    plan: SlicePlan
    out_dir: Path
    specs: tuple[DistortionSpec, ...]
    seed: int
    image_format: str
    subsampling: str
    expected: tuple[tuple[str, str], ...] | None
    """(image_id, sha256) recorded by an earlier run for this reference, if any."""
    sheet_sha256: str | None


def distort_slice(task: SliceTask) -> SliceOutcome:
    """Write the 27 distorted images of one slice and its contact sheet (skipping verified ones)."""
    from petctiqa.distort import decode_image, distort_image

    plan = task.plan
    reference_bytes = _out_file(task.out_dir, plan.reference).read_bytes()
    if sha256_hex(reference_bytes) != plan.reference_sha256:
        raise DatasetError(
            f"{task.out_dir / plan.reference}: reference render changed during build"
        )
    reference = decode_image(reference_bytes)
    expected = dict(task.expected or ())
    hashes: list[tuple[str, str]] = []
    tiles: list[SheetTile] = []
    written = 0
    # Files are written (temporary file, rename) by a few threads while this one goes on
    # computing; all writes finish before the state file. Images, sheets, references and the
    # state files skip the per-file fsync: a resumed build trusts a file only after checking
    # its sha256 against a state file (and recomputes what does not match, or a lost state
    # file's slice), and the finished build flushes the file system before the manifest.
    with ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="petctiqa-write") as writer:
        writes: list[Future] = []
        for spec in task.specs:
            image_id = f"{plan.slice_id}_{spec.code}"
            path = _out_file(task.out_dir, image_rel_path(image_id, task.image_format))
            on_disk = path.read_bytes() if path.is_file() else None
            verified = on_disk is not None and sha256_hex(on_disk) == expected.get(image_id)
            data = on_disk if verified else None
            if data is None:
                # no record of this image (e.g. interrupted before the slice state was written)
                # or it is missing/damaged: recompute it, rewrite only when the bytes differ
                data = distort_image(
                    reference,
                    spec,
                    rng_for(task.seed, image_id),
                    task.image_format,
                    task.subsampling,
                )
                if data != on_disk:
                    writes.append(writer.submit(atomic_write_bytes, path, data, durable=False))
                    written += 1
            hashes.append((image_id, sha256_hex(data)))
            tiles.append(
                SheetTile(
                    spec.poisson_level,
                    spec.gaussian_level,
                    spec.jpeg_level,
                    spec.jpeg_quality,
                    data,
                )
            )
        # the contact sheet and the 1:1 crops sheet, verified together by one digest
        sheet_paths = slice_sheet_paths(task.out_dir / "sheets", plan.slice_id)
        sheet_sha = task.sheet_sha256
        if written or sheet_sha is None or read_sheets_digest(sheet_paths) != sheet_sha:
            title = f"{plan.slice_id}   slice {plan.slice_number}   {plan.position_mm:.1f} mm"
            size = (reference.shape[1], reference.shape[0])
            sheets = slice_sheets_png(title, tiles, size)
            for sheet_path, sheet in zip(sheet_paths, sheets, strict=True):
                writes.append(writer.submit(atomic_write_bytes, sheet_path, sheet, durable=False))
            sheet_sha = sheets_digest(sheets)
        for write in writes:
            write.result()  # re-raises a failed write
    _write_json(
        _slice_state_path(task.out_dir, plan.slice_id),
        {
            "reference_sha256": plan.reference_sha256,
            "images": dict(hashes),
            "sheet_sha256": sheet_sha,
        },
        durable=False,
    )
    return SliceOutcome(plan.slice_id, tuple(hashes), written)


# ----------------------------------------------------------------------------- state files


OUTPUT_FOLDERS = ("images", "references", "sheets", STATE_DIR, f"{STATE_DIR}/patients",
                  f"{STATE_DIR}/slices")  # fmt: skip
"""Every folder the build writes files into (checked once to lie inside the output folder)."""


def check_output_folders(out_dir: Path) -> None:
    """Refuse output folders that resolve outside ``out_dir`` (a symlink to elsewhere): with
    each file name checked by :func:`_out_file`, every file then stays inside ``out_dir``."""
    for folder in OUTPUT_FOLDERS:
        inside(out_dir, out_dir / folder)


def _out_file(out_dir: Path, rel: str) -> Path:
    """``out_dir / rel`` for ``rel`` = ``<one of OUTPUT_FOLDERS>/<plain file name>``; anything
    else (a name with ``/`` or ``..``, from a damaged state file, say) is refused."""
    folder, _, name = rel.rpartition("/")
    if folder not in OUTPUT_FOLDERS:
        raise UnsafePathError(f"{out_dir}: {rel!r} is not a file of the dataset's folders")
    return join_component(out_dir / folder, name)


def _reference_rel_path(slice_id: str) -> str:
    return f"references/{slice_id}.png"


def _patient_state_path(out_dir: Path, patient_id: str) -> Path:
    return _out_file(out_dir, f"{STATE_DIR}/patients/{safe_component(patient_id)}.json")


def _slice_state_path(out_dir: Path, slice_id: str) -> Path:
    return _out_file(out_dir, f"{STATE_DIR}/slices/{slice_id}.json")


def _reusable_patient_plan(out_dir: Path, pair: PetCtPair, k: int) -> PatientPlan | None:
    """The plan recorded by an earlier run, if it is for this pair and its references verify."""
    state = _read_json(_patient_state_path(out_dir, pair.patient_id))
    if state is None:
        return None
    try:
        plan = PatientPlan(
            **{**state, "slices": tuple(SlicePlan(**s) for s in state["slices"])}  # type: ignore[arg-type]
        )
    except (KeyError, TypeError):
        return None
    same_pair = (plan.study_uid, plan.ct_series_uid, plan.pet_series_uid) == (
        pair.study_uid,
        pair.ct.series_uid,
        pair.pet.series_uid,
    )
    if not same_pair or len(plan.slices) != k or plan.patient_id != pair.patient_id:
        return None
    for number, item in enumerate(plan.slices, start=1):
        # the names come from a file: accept only those this build would give
        slice_id = slice_id_for(pair.patient_id, number)
        wanted = (slice_id, number, _reference_rel_path(slice_id))
        if (item.slice_id, item.slice_number, item.reference) != wanted:
            return None
        if file_sha256(_out_file(out_dir, item.reference)) != item.reference_sha256:
            return None
    return plan


def _slice_task(
    plan: SlicePlan, out_dir: Path, specs: tuple, seed: int, image_format: str, subsampling: str
) -> SliceTask:
    state = _read_json(_slice_state_path(out_dir, plan.slice_id)) or {}
    expected = None
    sheet = None
    if state.get("reference_sha256") == plan.reference_sha256 and isinstance(
        state.get("images"), dict
    ):
        expected = tuple(sorted((str(k), str(v)) for k, v in state["images"].items()))
        sheet = state.get("sheet_sha256")
    return SliceTask(plan, out_dir, specs, seed, image_format, subsampling, expected, sheet)


def build_settings(options: BuildOptions, n_patients: int, k: int, image_format: str) -> dict:
    """Everything that determines the dataset's bytes (checked against an earlier run)."""
    protocol = dataclasses.asdict(options.protocol)
    protocol.pop("source", None)
    return {
        "protocol": protocol,
        "seed": options.seed,
        "patients": n_patients,
        "slices_per_patient": k,
        "image_format": image_format,
        "patient_list": list(options.patient_list) if options.patient_list else None,
        "source": "phantom" if options.src is None else str(Path(options.src).resolve()),
    }


SOURCE_SERIES_KEY = "source_series"
"""Key of ``.build-state/build.json`` that records each candidate patient's PET/CT pair."""


def source_series(best: dict[str, PetCtPair]) -> dict[str, dict[str, str]]:
    """The PET/CT pair (UIDs) of every patient the build may take, by patient ID. With the
    settings, it fixes which patients and series the dataset is made of."""
    return {
        pid: {
            "study_uid": best[pid].study_uid,
            "ct_series_uid": best[pid].ct.series_uid,
            "pet_series_uid": best[pid].pet.series_uid,
        }
        for pid in sorted(best)
    }


def check_settings(out_dir: Path, settings: dict) -> None:
    """Refuse to mix a new build into an output folder built with different settings."""
    previous = _read_json(out_dir / STATE_DIR / "build.json")
    if previous is None:
        return
    previous.pop(SOURCE_SERIES_KEY, None)
    old, new = (
        _flatten(json.loads(json.dumps(previous))),
        _flatten(json.loads(json.dumps(settings))),
    )
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise DatasetError(
                f"{out_dir}: holds a dataset built with different settings ({key}: "
                f"{old.get(key)!r} before, {new.get(key)!r} now); use another --out"
            )


def check_source_series(out_dir: Path, series: dict[str, dict[str, str]]) -> None:
    """Refuse to rebuild an output folder from a source whose patients or PET/CT series differ
    from those it was built from (the same path with other files in it, for example): the new
    manifest would not describe the images already there."""
    previous = _read_json(out_dir / STATE_DIR / "build.json")
    recorded = None if previous is None else previous.get(SOURCE_SERIES_KEY)
    if not isinstance(recorded, dict):
        return
    for pid in sorted(set(recorded) | set(series)):
        before, now = recorded.get(pid), series.get(pid)
        if before == now:
            continue
        if before is None:
            change = "has a PET/CT pair in this source, not in the one it was built from"
        elif now is None:
            change = "in the source it was built from, without a PET/CT pair in this one"
        else:
            key = next(
                (k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)), "?"
            )
            change = f"{key} {before.get(key)!r} before, {now.get(key)!r} now"
        raise DatasetError(
            f"{out_dir}: holds a dataset built from other DICOM series (patient {pid}: {change}); "
            "use another --out"
        )


OUTPUT_FILES = (MANIFEST_NAME, SPLIT_NAME, DATASET_JSON)


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete the atomic writer's temporary files that a killed build left in the output
    folders (images, references, sheets, the build state and beside the top-level files);
    returns how many. Only names of the writer's pattern are touched."""
    removed = 0
    folders = [
        out_dir / name
        for name in ("images", "references", "sheets", f"sheets/{CROPS_DIR}", STATE_DIR)
    ] + [out_dir / STATE_DIR / "patients", out_dir / STATE_DIR / "slices", out_dir]
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            target = temporary_target(entry.name)
            if target is None or not entry.is_file(follow_symlinks=False):
                continue
            if folder == out_dir and target not in OUTPUT_FILES:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


# ----------------------------------------------------------------------------- executors


def _init_worker(main_pid: int, cwd: str) -> None:
    """Worker initializer: one OpenCV thread per worker (the pool already uses every core) and
    the watchdog that ends this worker when the main process dies."""
    cv2.setNumThreads(1)
    watch_main_process(main_pid, cwd)


def _executor(jobs: int) -> Executor:
    """The build's worker pool (:func:`petctiqa.pool.process_pool`): in-process for one job,
    else ``jobs`` workers forked from a fork server that preloads ``WORKER_MODULES`` once."""
    return process_pool(jobs, WORKER_MODULES, _init_worker)


# ----------------------------------------------------------------------------- source


# ----------------------------------------------------------------------------- orchestration


def _records(
    plans: list[PatientPlan],
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
                        patient_id=plan.patient_id,
                        slice_id=item.slice_id,
                        slice_number=item.slice_number,
                        slice_position_mm=item.position_mm,
                        study_uid=plan.study_uid,
                        ct_series_uid=plan.ct_series_uid,
                        pet_series_uid=plan.pet_series_uid,
                        ct_sop_uid=item.ct_sop_uid,
                        frame_of_reference_uid=plan.frame_of_reference_uid,
                        reference=item.reference,
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


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="build-dataset", disable=not enabled, leave=True)


def build_dataset(options: BuildOptions, log: Log | None = None) -> BuildSummary:
    """Build (or resume, or verify) the dataset described by ``options``.

    Returns only when every image, reference, contact sheet, ``manifest.csv``, ``split.csv`` and
    ``dataset.json`` is in place; any user-caused problem raises a :class:`PetctiqaError`
    subclass whose message names the file or field, leaving earlier output intact.
    """
    from petctiqa.distort import distortion_grid

    log = log or (lambda message: None)
    started = time.perf_counter()
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
    jobs = options.jobs or available_cores()
    specs = tuple(distortion_grid(protocol.distortions))
    settings = build_settings(options, n_patients, k, image_format)

    # Problems with the input are reported before a clash with an earlier build's settings;
    # both before anything is written (the phantom, the only generated input, goes to a cache).
    used_phantom = options.src is None
    if used_phantom:
        check_settings(out_dir, settings)
        out_dir.mkdir(parents=True, exist_ok=True)
        src = ensure_phantom(options.phantom_cache, n_patients, options.seed, options.progress, log)
        note = legacy_phantom_note(out_dir)
        if note:
            log(note)
    else:
        src = Path(options.src)  # type: ignore[arg-type]
    phantom_seconds = time.perf_counter() - started
    # One pool for the whole build. Its workers start (a thread waits for them: the fork server
    # imports numpy, OpenCV, SciPy, pydicom and numba once, ~1.8 s) while this process indexes the
    # DICOM headers itself: at ~0.25 ms per header that is faster than shipping the results
    # back from workers (2,657 phantom files: 0.6 s here against 1.0-1.2 s through a fresh
    # 2-worker pool, measured on 2 cores).
    executor = _executor(jobs)
    starter = threading.Thread(target=start_workers, args=(executor, jobs), daemon=True)
    starter.start()
    try:
        scan = scan_source(src, options.progress, log)
        index_seconds = time.perf_counter() - started - phantom_seconds
        chosen = choose_candidates(src, scan, options.seed, options.patient_list, n_patients, log)
        best = chosen.pairs
        series = source_series(best)
        check_settings(out_dir, settings)
        check_source_series(out_dir, series)
        out_dir.mkdir(parents=True, exist_ok=True)
        check_output_folders(out_dir)
        removed = remove_stale_temporaries(out_dir)
        if removed:
            noun = "file" if removed == 1 else "files"
            log(f"removed {removed} temporary {noun} left by an interrupted build in {out_dir}")
        _write_json(out_dir / STATE_DIR / "build.json", {**settings, SOURCE_SERIES_KEY: series})
    except BaseException:
        starter.join()
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    candidates = iter(chosen.order)
    in_this_process = InlineExecutor()

    sel = protocol.selection
    total = n_patients * k * len(specs)
    plans: dict[str, PatientPlan] = {}
    outcomes: dict[str, SliceOutcome] = {}
    passed_over: dict[str, str] = {}
    """Why each patient tried and not used was not (one line each)."""
    task_seconds = {"patient": 0.0, "slice": 0.0}
    running: dict[Future, tuple[str, str]] = {}
    patients_in_flight = 0
    bar = _progress_bar(total, options.progress)
    flusher = BackgroundFlush(total)

    def submit_slices(plan: PatientPlan) -> None:
        for item in plan.slices:
            task = _slice_task(
                item,
                out_dir,
                specs,
                options.seed,
                image_format,
                protocol.distortions.jpeg_subsampling,
            )
            running[executor.submit(timed, distort_slice, task)] = ("slice", item.slice_id)

    def next_candidates() -> Iterator[str]:
        while len(plans) + patients_in_flight < n_patients:
            pid = next(candidates, None)
            if pid is None:
                return
            yield pid

    try:
        while True:
            for pid in next_candidates():
                if pid not in best:
                    passed_over[pid] = chosen.problems[pid]  # logged by choose_candidates
                    continue
                check_series_intact(best[pid], scan.damaged)
                reused = _reusable_patient_plan(out_dir, best[pid], k)
                if reused is not None:
                    plans[pid] = reused
                    submit_slices(reused)
                    continue
                task = PatientTask(
                    best[pid],
                    out_dir,
                    k,
                    sel.margin_fraction,
                    sel.min_body_fraction,
                    protocol.render,
                )
                # While the pool is still starting (its fork server imports for ~1-2 s, often
                # longer than the index takes), this process prepares patients itself instead
                # of waiting idle; their slices go to the pool like the others'.
                runner = in_this_process if starter.is_alive() else executor
                running[runner.submit(timed, prepare_patient, task)] = ("patient", pid)
                patients_in_flight += 1
            if not running:
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: running[f]):
                kind, key = running.pop(future)
                if kind == "patient":
                    patients_in_flight -= 1
                    try:
                        plan, seconds = future.result()
                        task_seconds["patient"] += seconds
                    except (NoUsableSlices, DicomError) as exc:
                        # the volumes do not load or give too few slices: try the next patient
                        reason = str(exc)
                        if not reason.startswith(f"patient {key}: "):
                            reason = f"patient {key}: {reason}"
                        passed_over[key] = reason
                        log(f"skipping {reason}")
                        continue
                    plans[key] = plan
                    submit_slices(plan)
                else:
                    outcome, seconds = future.result()
                    task_seconds["slice"] += seconds
                    outcomes[key] = outcome
                    bar.update(len(outcome.image_sha256))
                    flusher.images_done(outcome.written)
                bar.set_postfix_str(f"patients {len(plans)}/{n_patients}", refresh=False)
    except BaseException:
        for future in running:
            future.cancel()
        starter.join()
        executor.shutdown(wait=True, cancel_futures=True)
        bar.close()
        raise
    starter.join()
    executor.shutdown(wait=True)
    bar.close()

    if len(plans) < n_patients:
        reasons = "; ".join(passed_over.values()) if passed_over else "not enough candidates"
        raise DatasetError(
            f"{src}: only {len(plans)} of {n_patients} requested patients have {k} usable slices "
            f"({reasons})"
        )
    records = _records(
        list(plans.values()),
        specs,
        outcomes,
        options.seed,
        image_format,
        protocol.distortions.poisson_form,
    )
    if len(records) != total:  # a bug, not a user error
        raise RuntimeError(f"built {len(records)} images, expected {total}")
    split = split_patients(list(plans), protocol.output.test_fraction, options.seed)
    flusher.finish()  # images were written without fsync: on disk before the manifest
    write_manifest(out_dir / MANIFEST_NAME, records)
    write_split(out_dir / SPLIT_NAME, split)
    _write_json(
        out_dir / DATASET_JSON,
        {
            "format_version": DATASET_FORMAT_VERSION,
            "petctiqa_version": __version__,
            "protocol": protocol.name,
            "protocol_source": protocol.source,
            "seed": options.seed,
            "image_format": image_format,
            "source": str(src),
            "source_kind": "phantom" if used_phantom else "dicom",
            "counts": {
                "patients": len(plans),
                "slices_per_patient": k,
                "slices": len(plans) * k,
                "distortions": len(specs),
                "images": len(records),
                "train_patients": sum(v == "train" for v in split.values()),
                "test_patients": sum(v == "test" for v in split.values()),
            },
            "patients": sorted(plans),
            "files": {"manifest": MANIFEST_NAME, "split": SPLIT_NAME},
            "settings": settings,
        },
    )
    written = sum(o.written for o in outcomes.values())
    return BuildSummary(
        out_dir=out_dir,
        source=src,
        used_phantom=used_phantom,
        patients=tuple(sorted(plans)),
        slices=len(plans) * k,
        images=len(records),
        images_written=written,
        images_verified=len(records) - written,
        seconds=time.perf_counter() - started,
        phantom_seconds=phantom_seconds,
        index_seconds=index_seconds,
        patient_task_seconds=task_seconds["patient"],
        slice_task_seconds=task_seconds["slice"],
        substitutions=substitutions(chosen.order, n_patients, list(plans), passed_over),
    )
