from __future__ import annotations

import os
from pathlib import Path

import pytest

from petctiqa.atomic import atomic_write_bytes, atomic_write_text, atomic_writer, temporary_target


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


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_umask_permissions_not_0600(tmp_path: Path, umask: int, mode: int):
    previous = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "image.jpg", b"x", durable=False)
        atomic_write_text(tmp_path / "manifest.csv", "a\n")
    finally:
        os.umask(previous)
    for name in ("image.jpg", "manifest.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode


def test_temporary_names_are_recognised_and_unique(tmp_path: Path):
    seen: set[str] = set()
    for _ in range(200):
        with atomic_writer(tmp_path / "a.jpg", "wb", durable=False) as handle:
            handle.write(b"x")
            (name,) = [p.name for p in tmp_path.iterdir() if p.name != "a.jpg"]
            assert temporary_target(name) == "a.jpg"
            seen.add(name)
    assert len(seen) == 200
    assert [p.name for p in tmp_path.iterdir()] == ["a.jpg"]
