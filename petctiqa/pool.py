"""Process-pool infrastructure shared by the dataset build and the phantom writer.

- :func:`process_pool`: worker processes from a fork server whose imports do not depend on the
  current folder, each worker watching the main process so that it ends when that dies;
- :func:`watch_main_process`: the watchdog itself, for any pool's initializer;
- :class:`InlineExecutor`: the same interface, run in this process (one job);
- :class:`BackgroundFlush`: ``os.sync`` in a thread while the work goes on;
- :func:`timed`, :func:`available_cores`, :func:`start_workers`: small helpers.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from multiprocessing import forkserver
from typing import Any


class BackgroundFlush:
    """Flushes the file system (``os.sync``) in a thread while the work goes on.

    Files written without fsync are flushed once before whatever must only follow them (the
    build's manifest); that flush is mostly waiting for the disk. A flush started each time
    another quarter of the files is written overlaps that wait with the work still running;
    :meth:`finish` then has only the last part to write (figures: docs/dataset.md, "Speed").
    """

    STEPS = 4

    def __init__(self, total_images: int) -> None:
        self._every = max(1, total_images // self.STEPS)
        self._pending = 0
        self._thread: threading.Thread | None = None

    def images_done(self, written: int) -> None:
        """Count ``written`` new files; start a flush when enough are pending and none runs."""
        self._pending += written
        if self._pending < self._every or not hasattr(os, "sync"):
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._pending = 0
        self._thread = threading.Thread(target=os.sync, name="petctiqa-flush", daemon=True)
        self._thread.start()

    def finish(self) -> None:
        """Wait for a running flush, then flush what was written since it started."""
        if self._thread is not None:
            self._thread.join()
        if hasattr(os, "sync"):
            os.sync()


def timed(function: Callable, task: Any) -> tuple[Any, float]:
    """Run ``function(task)`` and return its result with the seconds it took (in the worker)."""
    started = time.perf_counter()
    result = function(task)
    return result, time.perf_counter() - started


class InlineExecutor(Executor):
    """Runs each task at submission, in this process (one job)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:  # type: ignore[override]
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def watch_main_process(main_pid: int, cwd: str | None = None) -> None:
    """Pool initializer: start a watchdog thread that ends this worker when the main process
    ``main_pid`` dies (even by SIGKILL) instead of leaving it waiting for work forever; with
    ``cwd``, also work in the main process's folder (a fork server's workers otherwise keep
    the folder the server was started in, and relative paths would point elsewhere)."""
    if cwd is not None:
        os.chdir(cwd)
    threading.Thread(
        target=_exit_when_gone, args=(main_pid,), name="petctiqa-watchdog", daemon=True
    ).start()


def _exit_when_gone(pid: int) -> None:
    """Block until process ``pid`` has ended, then end this process.

    A fork server's workers have the server, not the main process, as parent (so the
    parent-death signal does not help), and a pool's pipes stay open in the other workers (so
    no read ever sees EOF): without this, workers of a killed process wait forever. Linux: a
    pidfd, woken at once; other POSIX systems: a check every second; elsewhere: nothing.
    """
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3, or pid already gone
        handle = None
    if handle is not None:
        select.select([handle], [], [])  # readable once the process has exited
    elif os.name == "posix":
        while True:
            try:
                os.kill(pid, 0)  # signal 0: only asks whether pid exists
            except (ProcessLookupError, PermissionError):  # gone, or reused by another user
                break
            time.sleep(1.0)
    else:  # pragma: no cover - Windows: no cheap way, and os.kill would terminate pid
        return
    os._exit(1)


@contextlib.contextmanager
def _safe_import_path() -> Iterator[None]:
    """Start child interpreters without the current folder on ``sys.path``.

    The fork server runs ``python -c ...``, which puts the current folder first on its
    ``sys.path``: run from a folder holding a ``petctiqa/`` directory (the parent of a clone),
    its imports found that directory instead of the installed package and every worker
    failed. ``PYTHONSAFEPATH`` (Python >= 3.11) keeps the folder off the path; it is set
    only while the server starts.
    """
    previous = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["PYTHONSAFEPATH"]
        else:
            os.environ["PYTHONSAFEPATH"] = previous


def process_pool(
    jobs: int,
    preload: Sequence[str],
    initializer: Callable[..., None] = watch_main_process,
    initargs: tuple | None = None,
) -> Executor:
    """``jobs`` worker processes (in-process for one job) that end with this process.

    Workers come from a fork server where the platform has one (Linux, macOS), else are
    spawned. Never a plain fork of this process: a forked child inherits OpenCV's (and
    OpenMP's) thread-pool locks in whatever state this process's threads left them, and
    cv2.setNumThreads then deadlocks. The fork server is a fresh interpreter that imports only
    ``preload`` (once per process: a server already running is reused), and each worker
    forked from it starts with those imports done. ``initializer`` runs in each worker with
    ``initargs`` (default: this process's pid and folder, for :func:`watch_main_process`;
    a custom initializer must call that itself).
    """
    if jobs == 1:
        return InlineExecutor()
    if initargs is None:
        initargs = (os.getpid(), os.getcwd())
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(preload))
        with _safe_import_path():
            forkserver.ensure_running()
    else:  # pragma: no cover - Windows
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(
        max_workers=jobs, initializer=initializer, initargs=initargs, mp_context=context
    )


def start_workers(executor: Executor, jobs: int) -> None:
    """Start every worker of a fresh pool now rather than at the first task (run in a thread:
    with a fork server, the first start waits for the server's imports)."""
    with contextlib.suppress(RuntimeError):  # the work failed and shut the pool down
        for _ in range(jobs if jobs > 1 else 0):
            executor.submit(int)
