from __future__ import annotations

import os
from pathlib import Path

import pytest

from petctiqa.atomic import atomic_write_bytes, atomic_write_text, atomic_writer


def test_replaces_the_file_and_fsyncs_unless_told_not_to(tmp_path: Path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    target = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first" and len(synced) == 1
    atomic_write_bytes(target, b"second", durable=False)
    assert target.read_bytes() == b"second" and len(synced) == 1
    atomic_write_text(tmp_path / "t.txt", "x\r\ny\n")
    assert (tmp_path / "t.txt").read_bytes() == b"x\r\ny\n" and len(synced) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.bin", "sub", "t.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    with pytest.raises(ValueError, match="write modes only"), atomic_writer(target, "r"):
        pass
