"""FIFOs, sockets and symlink loops in a DICOM tree are skipped without being opened (#18.3):
a FIFO named ``*.dcm`` made ``inspect`` and ``build-dataset`` wait forever."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from petctiqa.dicom.index import index_dicom_tree

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")

CLI = [sys.executable, "-m", "petctiqa_cli.main"]
GUARD_S = 120
"""A run that hangs fails after this long instead of blocking the suite."""


def special_tree(shared_data: Path, root: Path) -> dict[str, Path]:
    """STS_002 (one PET/CT pair) with a FIFO, a socket, a symlink loop and a broken symlink
    named like slices beside the CT slices."""
    shutil.copytree(shared_data / "dicom" / "STS_002", root)
    ct = root / "CT_crop"
    paths = {
        "fifo": ct / "zz-fifo.dcm",
        "loop": ct / "zz-loop.dcm",
        "broken": ct / "zz-broken.dcm",
        "socket": ct / "zz-sock.dcm",
    }
    os.mkfifo(paths["fifo"])
    os.symlink(paths["loop"].name, paths["loop"])  # points to itself
    os.symlink("no-such-file.dcm", paths["broken"])
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(paths["socket"]))
    return paths


EXPECTED = {
    "fifo": "not a regular file (FIFO, not read)",
    "loop": "symlink loop (not followed)",
    "broken": "broken symlink",
    "socket": "not a regular file (socket, not read)",
}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=GUARD_S, stdin=subprocess.DEVNULL
    )


def test_index_skips_special_files_with_their_reason(shared_data, tmp_path):
    paths = special_tree(shared_data, tmp_path / "src")
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from petctiqa.dicom.index import index_dicom_tree; "
         "print(len(index_dicom_tree(sys.argv[1]).series))", str(tmp_path / "src")],
        capture_output=True, text=True, timeout=GUARD_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2"]
    index = index_dicom_tree(tmp_path / "src")  # the guard above has shown it returns
    reasons = {item.path: item.reason for item in index.skipped}
    assert {paths[k]: EXPECTED[k] for k in paths} == {p: reasons[p] for p in paths.values()}
    assert sorted(s.modality for s in index.series) == ["CT", "PT"]


def test_inspect_lists_special_files_and_does_not_hang(shared_data, tmp_path):
    special_tree(shared_data, tmp_path / "src")
    done = _run("inspect", str(tmp_path / "src"))
    assert done.returncode == 0, done.stderr
    for reason in EXPECTED.values():
        assert f"{reason}: CT_crop/zz-" in done.stdout


def test_build_names_each_special_file_and_completes(shared_data, tmp_path):
    paths = special_tree(shared_data, tmp_path / "src")
    protocol = tmp_path / "small.toml"
    shipped = Path(__file__).parents[2] / "protocols" / "pet-ct-iqa-ds.toml"
    protocol.write_text(shipped.read_text().replace("size = 512 ", "size = 128 "))
    done = _run(
        "build-dataset", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "ds"),
        "--protocol", str(protocol), "--patients", "1", "--slices", "1", "--jobs", "1", "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "dataset complete: 27 images" in done.stdout
    for key, path in paths.items():
        assert f"skipped {path}: {EXPECTED[key]}\n" in done.stderr
