"""Run the build's tasks: patients in candidate order until N are prepared, their slices as
soon as each patient is ready, on a worker pool (or in this process while the pool starts).

A patient that cannot be used (no usable pair, volumes that do not load, too few usable
slices) is passed over with its reason and the next candidate is tried.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path

from petctiqa.dataset.candidates import Candidates, check_series_intact
from petctiqa.dataset.records import PreparedPatient, SliceOutcome
from petctiqa.dataset.resume import reusable_patient, slice_task
from petctiqa.dataset.select import NoUsableSlices
from petctiqa.dataset.tasks import PatientTask, distort_slice
from petctiqa.dicom.records import SkippedFile
from petctiqa.distort import slice_specs
from petctiqa.errors import DicomError
from petctiqa.pool import BackgroundFlush, InlineExecutor, timed
from petctiqa.protocol import DatasetProtocol

Log = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    """What the scheduler builds: N patients x K slices with these settings, into ``out_dir``."""

    out_dir: Path
    protocol: DatasetProtocol
    n_patients: int
    slices: int
    specs: tuple
    """The images of one slice (a continuous design draws each slice's own: see slice_specs)."""
    seed: int
    image_format: str


@dataclass
class Progress:
    """What the tasks produced so far."""

    patients: dict[str, PreparedPatient] = field(default_factory=dict)
    outcomes: dict[str, SliceOutcome] = field(default_factory=dict)
    passed_over: dict[str, str] = field(default_factory=dict)
    """Why each patient tried and not used was not (one line each)."""
    task_seconds: dict[str, float] = field(default_factory=lambda: {"patient": 0.0, "slice": 0.0})


class Scheduler:
    """Submits the tasks and collects their results (see the module docstring).

    ``prepare`` is the patient task's function (a parameter so that the build module's name is
    the one used); ``starter`` is the thread starting the pool: while it runs, patients are
    prepared in this process instead of waiting idle for the workers.
    """

    def __init__(
        self,
        job: Job,
        chosen: Candidates,
        damaged: list[SkippedFile],
        executor: Executor,
        starter: threading.Thread,
        prepare: Callable,
        log: Log,
    ) -> None:
        self.job, self.chosen, self.damaged = job, chosen, damaged
        self.executor, self.starter, self.prepare, self.log = executor, starter, prepare, log
        self.done = Progress()
        self._candidates = iter(chosen.order)
        self._running: dict[Future, tuple[str, str]] = {}
        self._patients_in_flight = 0
        self._inline = InlineExecutor()

    def run(self, bar, flusher: BackgroundFlush) -> Progress:
        """Run every task; on any exception, cancel what has not started and re-raise."""
        try:
            while True:
                for pid in self._next_candidates():
                    self._start_patient(pid)
                if not self._running:
                    return self.done
                finished, _ = wait(list(self._running), return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: self._running[f]):
                    self._collect(future, bar, flusher)
                done = len(self.done.patients)
                bar.set_postfix_str(f"patients {done}/{self.job.n_patients}", refresh=False)
        except BaseException:
            for future in self._running:
                future.cancel()
            raise

    def _next_candidates(self) -> Iterator[str]:
        while len(self.done.patients) + self._patients_in_flight < self.job.n_patients:
            pid = next(self._candidates, None)
            if pid is None:
                return
            yield pid

    def _start_patient(self, pid: str) -> None:
        job, pairs = self.job, self.chosen.pairs
        if pid not in pairs:
            self.done.passed_over[pid] = self.chosen.problems[pid]  # logged when chosen
            return
        check_series_intact(pairs[pid], self.damaged)
        reused = reusable_patient(job.out_dir, pairs[pid], job.slices)
        if reused is not None:
            self.done.patients[pid] = reused
            self._submit_slices(reused)
            return
        sel = job.protocol.selection
        task = PatientTask(
            pairs[pid],
            job.out_dir,
            job.slices,
            sel.margin_fraction,
            sel.min_body_fraction,
            job.protocol.render,
            job.protocol.distortions,
            job.seed,
        )
        runner = self._inline if self.starter.is_alive() else self.executor
        self._running[runner.submit(timed, self.prepare, task)] = ("patient", pid)
        self._patients_in_flight += 1

    def _submit_slices(self, patient: PreparedPatient) -> None:
        job = self.job
        subsampling = job.protocol.distortions.jpeg_subsampling
        for item in patient.slices:
            specs = slice_specs(job.protocol.distortions, job.seed, item.slice_id)
            task = slice_task(item, job.out_dir, specs, job.seed, job.image_format, subsampling)
            future = self.executor.submit(timed, distort_slice, task)
            self._running[future] = ("slice", item.slice_id)

    def _collect(self, future: Future, bar, flusher: BackgroundFlush) -> None:
        kind, key = self._running.pop(future)
        if kind == "slice":
            outcome, seconds = future.result()
            self.done.task_seconds["slice"] += seconds
            self.done.outcomes[key] = outcome
            bar.update(len(outcome.image_sha256))
            flusher.images_done(outcome.written)
            return
        self._patients_in_flight -= 1
        try:
            patient, seconds = future.result()
        except (NoUsableSlices, DicomError) as exc:
            # the volumes do not load or give too few slices: the next candidate is tried
            reason = str(exc)
            if not reason.startswith(f"patient {key}: "):
                reason = f"patient {key}: {reason}"
            self.done.passed_over[key] = reason
            self.log(f"skipping {reason}")
            return
        self.done.task_seconds["patient"] += seconds
        self.done.patients[key] = patient
        self._submit_slices(patient)
