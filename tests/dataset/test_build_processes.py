"""Worker processes of the build and of the phantom writer: they do not depend on the current
folder, and they end with the main process (issue #18.2, #18.4)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="needs Linux /proc and a fork server"
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _wait_gone(pids: list[int], seconds: float = 15.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


BUILD_IN_CWD = """
import sys
from pathlib import Path
from petctiqa.dataset.build import BuildOptions, build_dataset
from petctiqa.protocol import load_dataset_protocol

if __name__ == "__main__":  # the workers import this file too
    src, protocol, out = sys.argv[1:4]
    summary = build_dataset(BuildOptions(
        out_dir=Path(out), protocol=load_dataset_protocol(Path(protocol)), src=Path(src),
        jobs=2, patients=1, slices=1,
    ))
    print("images", summary.images)
"""


@pytest.mark.parametrize("init_file", [False, True])
def test_build_does_not_import_a_petctiqa_folder_from_the_current_folder(
    init_file, small_phantom, small_protocol, tmp_path
):
    """#18.2: from a folder holding a ``petctiqa/`` directory (the parent of a clone), the fork
    server's workers imported that directory instead of the package and the pool broke. An
    empty folder shadows an editable install; one with an ``__init__.py`` shadows any install."""
    work = tmp_path / "work"
    (work / "petctiqa").mkdir(parents=True)
    if init_file:
        (work / "petctiqa" / "__init__.py").write_text("")
    script = tmp_path / "script" / "build.py"  # not in cwd: the main process imports cleanly
    script.parent.mkdir()
    script.write_text(BUILD_IN_CWD)
    done = subprocess.run(
        [sys.executable, str(script), str(small_phantom), str(small_protocol), "out"],
        cwd=work, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["images", "27"]
    # the relative --out is the main process's folder, also for the workers
    assert len(list((work / "out" / "images").iterdir())) == 27


KILLED_PHANTOM = """
import os, sys, threading, time
from pathlib import Path
from petctiqa import phantom

started = Path(sys.argv[1])

def slow_study(args):
    (started / str(os.getpid())).write_text("")
    time.sleep(120)

phantom._write_one = slow_study  # the pool forks this process: workers see the patch
threading.Thread(
    target=phantom.write_phantom_tree, args=(started / "tree", 2), kwargs={"jobs": 2}, daemon=True
).start()
deadline = time.monotonic() + 60
while len([p for p in started.iterdir() if p.name.isdigit()]) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
print(*[p.name for p in started.iterdir() if p.name.isdigit()], flush=True)
os.kill(os.getpid(), int(sys.argv[2]))
time.sleep(30)
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_phantom_workers_end_when_the_main_process_is_killed(signum, tmp_path):
    """#18.4: a build killed while writing the phantom left its pool workers alive."""
    # output to a file, not a pipe: orphaned workers would hold a pipe open
    log = tmp_path / "stdout.txt"
    with log.open("w") as stdout:
        done = subprocess.run(
            [sys.executable, "-c", KILLED_PHANTOM, str(tmp_path), str(int(signum))],
            stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == -signum, done.stderr
    pids = [int(p) for p in log.read_text().split()]
    assert len(pids) == 2  # both workers were busy in a study when the main process died
    left = _wait_gone(pids)
    for pid in left:  # do not leave them behind after a failure either
        subprocess.run(["kill", "-9", str(pid)], check=False)
    assert not left
