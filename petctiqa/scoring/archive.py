"""``petctiqa score ARCHIVE/ --out scores.csv``: score a tree of images and DICOM PET/CT studies.

Units (:mod:`petctiqa.scoring.walk`) are decoded or rendered in worker processes while this
process runs the model on batches of their inputs; every scored row goes to the journal
(:mod:`petctiqa.scoring.journal`) as it comes, so a rerun after a kill skips what is scored.
Under torchrun each process takes every ``world``-th unit; when all are done, rank 0 merges
the journals in walk order and writes the output once, atomically: the same rows in the same
order whatever the number of processes. Per-study summary rows (mean, worst slice, fraction
below ``threshold``) follow each study's slice rows. An unreadable unit gives an error row.
"""

from __future__ import annotations

import csv
import io
import math
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from petctiqa.atomic import atomic_write_text
from petctiqa.errors import DatasetError
from petctiqa.iqa.inference import predict_stacks
from petctiqa.pool import process_pool
from petctiqa.scoring.journal import JournalWriter, check_settings, journal_dir, read_journal
from petctiqa.scoring.shard import threads_per_process
from petctiqa.scoring.walk import Unit, checkpoint_sha256, walk_inputs
from petctiqa.scoring.work import Decoded, decode_unit

SCALE = "0..4 MOS"
WORKER_IMPORTS = ["petctiqa.scoring.work"]
COLUMNS = (
    "kind", "source", "key", "score", "s", "w", "worst_score", "worst_source",
    "fraction_below", "scale", "model", "simulated", "error",
)  # fmt: skip


@dataclass(frozen=True)
class ArchiveOptions:
    batch_size: int = 16
    slice_stride: int = 1
    threshold: float = 2.0
    """Summary rows give the fraction of a study's slices scoring below this (0..4 scale)."""
    jobs: int = 2
    """Worker processes that decode and render (1: in this process)."""
    rank: int = 0
    world: int = 1


@dataclass(frozen=True)
class ArchiveResult:
    rows: int
    errors: int
    skipped_units: int
    """Units an earlier run had finished (read from the journal, not scored again)."""
    units: int


def journal_settings(scorer, options: ArchiveOptions) -> dict[str, Any]:
    """What the journal's scores depend on (a journal with other settings is refused)."""
    return {
        "checkpoint_sha256": checkpoint_sha256(scorer.checkpoint_path),
        "model": scorer.model_name,
        "preprocessing": scorer.preprocessing.to_dict(),
        "render": {"name": scorer.render_name, **asdict(scorer.render_settings)},
        "slice_stride": options.slice_stride,
    }


def default_jobs(device_type: str, model_threads: int, cores: int | None = None) -> int:
    """Decoding workers when none are asked for: 2, except on a CPU of at most 2 cores (this
    process's share of them under torchrun) that the model's threads fill. There, rendering in
    a thread of this process measured faster than rendering in worker processes, which took
    more of the cores from the model's threads (docs/scoring.md); larger CPUs were not
    measured."""
    if cores is None:
        cores = threads_per_process()
    if device_type == "cpu" and cores <= 2 and model_threads >= cores:
        return 1
    return 2


def start_worker_imports(jobs: int) -> None:
    """Start the fork server that decoding workers come from, so that its imports (seconds)
    run while the caller loads the model and walks the archive; the pool made later reuses it
    (:func:`petctiqa.pool.process_pool`). Nothing to do for ``jobs`` 1 (decoding in a thread)."""
    if jobs > 1:
        process_pool(jobs, WORKER_IMPORTS).shutdown(wait=False)


def decoding_executor(jobs: int) -> Executor:
    """Where units are decoded: ``jobs`` worker processes, or for ``jobs`` 1 one thread of this
    process. The thread renders the next units while the model runs (NumPy, OpenCV and the
    ONNX runtimes release the GIL): on 2 cores it beat rendering between batches, e.g.
    petct-cnn archive / pure 0.75-0.79 vs 0.69 (docs/scoring.md)."""
    if jobs == 1:
        return ThreadPoolExecutor(1, thread_name_prefix="petctiqa-render")
    return process_pool(jobs, WORKER_IMPORTS)


class _Decoder:
    """Decoded units in order from :func:`decoding_executor`, running ahead by ``2 x jobs``
    units.

    The workers start (fork server, imports) and take their first units in a thread as soon
    as this is made, so the caller can prepare the model (ONNX Runtime session) meanwhile
    instead of before or after: at the start of a run both would otherwise wait on each other.
    """

    def __init__(self, units: Sequence[Unit], options: ArchiveOptions, scorer) -> None:
        self.args = (options.slice_stride, scorer.render_settings, scorer.preprocessing)
        self.pool = decoding_executor(options.jobs)
        self.ahead = 2 * options.jobs
        self.todo = iter(units)
        self.queue: deque = deque()
        self.failure: BaseException | None = None
        self.starter = threading.Thread(target=self._start, name="petctiqa-decode", daemon=True)
        self.starter.start()

    def _start(self) -> None:
        try:
            self._fill()
        except BaseException as exc:  # re-raised in the consuming thread
            self.failure = exc

    def _fill(self) -> None:
        while len(self.queue) < self.ahead:
            unit = next(self.todo, None)
            if unit is None:
                return
            self.queue.append(self.pool.submit(decode_unit, unit, *self.args))

    def __iter__(self) -> Iterator[Decoded]:
        with self.pool:
            self.starter.join()
            if self.failure is not None:
                raise self.failure
            while self.queue:
                future = self.queue.popleft()
                self._fill()
                yield future.result()

    def close(self) -> None:
        """End the workers when the units were not (all) consumed."""
        self.starter.join()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _score_units(units: Sequence[Unit], scorer, model, options, state, journal) -> int:
    """Score ``units`` (this rank's, not finished before), journaling each row; returns the
    number of rows written."""
    owners: list[tuple[str, str, int, str, bool]] = []
    decoder = _Decoder(units, options, scorer)

    def stacks() -> Iterator[Any]:
        for decoded in decoder:
            unit = decoded.unit
            if decoded.error:
                journal.append(_error_row(unit, decoded.error))
                journal.append({"unit": unit.key, "done": 1})
                continue
            known = state.row_keys(unit.key)
            todo = [(pos, item) for pos, item in enumerate(decoded.items) if item[0] not in known]
            if not todo:
                journal.append({"unit": unit.key, "done": len(decoded.items)})
            for i, (pos, (key, label, stack)) in enumerate(todo):
                owners.append((unit.key, key, pos, label, i == len(todo) - 1))
                yield stack

    try:
        if hasattr(model, "warm"):
            model.warm(scorer.input_shapes())
        outputs = predict_stacks(
            model, stacks(), scorer.device, options.batch_size, scorer.amp_dtype,
            scorer.channels_last,
        )  # fmt: skip
        written = _journal_outputs(outputs, owners, scorer, journal)
    finally:
        decoder.close()
    return written


def _journal_outputs(outputs, owners, scorer, journal) -> int:
    """Journal each model output as the row of its owner; a unit's end after its last row."""
    written = 0
    for index, out in enumerate(outputs):
        unit_key, key, pos, label, last = owners[index]
        score = float(scorer.label_scale.denormalise(out["score"]))
        journal.append(
            {"unit": unit_key, "key": key, "pos": pos, "source": label, "score": score,
             "s": float(out["s"]), "w": float(out["w"]), "error": ""}
        )  # fmt: skip
        written += 1
        if last:
            journal.append({"unit": unit_key, "done": pos + 1})
    return written


def _error_row(unit: Unit, error: str) -> dict[str, Any]:
    nan = float("nan")
    return {"unit": unit.key, "key": unit.key, "pos": 0, "source": unit.label,
            "score": nan, "s": nan, "w": nan, "error": error}  # fmt: skip


def score_archive(
    scorer,
    inputs: Sequence[Path],
    out: Path,
    model,
    options: ArchiveOptions,
    barrier=None,
    units: Sequence[Unit] | None = None,
) -> ArchiveResult | None:
    """Score ``inputs`` into ``out`` (.csv) with ``model`` (the object ``predict_stacks``
    drives: the torch model or a :class:`petctiqa.scoring.runtime.OnnxModel`).

    ``barrier`` (a callable) separates scoring from rank 0's merge under torchrun. ``units``:
    ``walk_inputs(inputs, options.slice_stride)`` when the caller has it already (indexing a
    DICOM archive takes seconds). Returns the counts on rank 0, None on the other ranks."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise DatasetError(f"{out}: archive scoring writes .csv")
    if out.is_dir():
        raise DatasetError(f"{out}: is a folder, not a .csv file", setting="out")
    if units is None:
        units = walk_inputs(inputs, options.slice_stride)
    folder = journal_dir(out)
    if options.rank == 0:
        check_settings(folder, journal_settings(scorer, options))
    if barrier is not None:
        barrier()
    check_settings(folder, journal_settings(scorer, options))
    state = read_journal(folder)
    finished_before = sum(u.key in state.done for u in units)
    mine = [u for i, u in enumerate(units) if i % options.world == options.rank]
    todo = [u for u in mine if u.key not in state.done]
    journal = JournalWriter(folder, options.rank)
    try:
        _score_units(todo, scorer, model, options, state, journal)
    finally:
        journal.close()
    if barrier is not None:
        barrier()
    if options.rank != 0:
        return None
    state = read_journal(folder)
    rows = merged_rows(units, state, options.threshold)
    write_archive_csv(out, rows, scorer.model_name, scorer.simulated)
    errors = sum(1 for r in rows if r["error"])
    return ArchiveResult(len(rows), errors, finished_before, len(units))


def merged_rows(units: Sequence[Unit], state, threshold: float) -> list[dict[str, Any]]:
    """Output rows in walk order: each unit's rows by position, a study's summary after them."""
    rows: list[dict[str, Any]] = []
    for unit in units:
        found = sorted(state.rows.get(unit.key, {}).values(), key=lambda r: r.get("pos", 0))
        if unit.key not in state.done:
            found.append(_error_row(unit, f"{unit.label}: not scored (a process failed)"))
        elif not found:
            found.append(_error_row(unit, f"{unit.label}: no slice inside the PET/CT overlap"))
        kind = "slice" if unit.kind == "study" else "image"
        for row in found:
            rows.append({**row, "kind": "error" if row["error"] else kind})
        if unit.kind == "study" and found and not any(r["error"] for r in found):
            rows.append(study_summary(unit, found, threshold))
    return rows


def study_summary(unit: Unit, slices: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    scores = [float(r["score"]) for r in slices]
    worst = min(range(len(scores)), key=scores.__getitem__)
    return {
        "kind": "study", "source": unit.label, "key": unit.key,
        "score": sum(scores) / len(scores), "s": math.nan, "w": math.nan,
        "worst_score": scores[worst], "worst_source": slices[worst]["source"],
        "fraction_below": sum(s < threshold for s in scores) / len(scores), "error": "",
    }  # fmt: skip


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{float(value):.6f}"


def write_archive_csv(path: Path, rows: Sequence[dict[str, Any]], model: str, simulated: bool):
    """The output, atomically (see COLUMNS; numbers with 6 decimals, blank when absent)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    sim = "true" if simulated else "false"
    for r in rows:
        writer.writerow(
            [r["kind"], r["source"], r["key"], _number(r["score"]), _number(r.get("s")),
             _number(r.get("w")), _number(r.get("worst_score")), r.get("worst_source", ""),
             _number(r.get("fraction_below")), "0..4", model, sim, r["error"]]
        )  # fmt: skip
    atomic_write_text(path, buffer.getvalue())
