"""The built-in phantom lives in a cache folder outside the dataset: same bytes, same images."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from petctiqa.dataset.phantom_cache import default_phantom_cache, ensure_phantom, phantom_root
from petctiqa.errors import DatasetError
from petctiqa_cli.main import cli


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _build(out: Path, *extra: str):
    args = ["build-dataset", "--quiet", "--out", str(out), "--patients", "1", "--slices", "1"]
    return CliRunner().invoke(cli, [*args, "--jobs", "1", *extra])


def test_default_cache_follows_env_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("PETCTIQA_PHANTOM_CACHE", str(tmp_path / "env"))
    assert default_phantom_cache() == tmp_path / "env"
    monkeypatch.delenv("PETCTIQA_PHANTOM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_phantom_cache() == tmp_path / "xdg" / "petctiqa"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_phantom_cache() == tmp_path / "home" / ".cache" / "petctiqa"
    assert phantom_root(tmp_path, 20, 0) == tmp_path / "phantom-20p-seed0"


@pytest.mark.slow
def test_phantom_goes_to_the_cache_not_the_dataset_and_is_reused(tmp_path):
    cache = tmp_path / "cache"
    first = _build(tmp_path / "a", "--phantom-cache", str(cache))
    assert first.exit_code == 0, first.output
    root = cache / "phantom-1p-seed0"
    assert (
        "no DICOM source given: generating the built-in synthetic PET/CT phantom (1 patients, seed 0) "
        f"in {root} (a cache outside the dataset)"
    ) in first.stderr
    # the dataset holds no DICOM; dataset.json says where the source was
    assert not list((tmp_path / "a").rglob("*.dcm"))
    assert json.loads((tmp_path / "a" / "dataset.json").read_text())["source"] == str(root)
    phantom = _hashes(root)
    assert len([k for k in phantom if k.endswith(".dcm")]) > 100
    stamp = next(root.rglob("*.dcm")).stat().st_mtime_ns
    # a second dataset elsewhere reuses the same tree; its images are the same bytes
    second = _build(tmp_path / "b", "--phantom-cache", str(cache))
    assert second.exit_code == 0, second.output
    assert (
        f"using the built-in synthetic PET/CT phantom (1 patients, seed 0) already in {root}"
        in (second.stderr)
    )
    assert next(root.rglob("*.dcm")).stat().st_mtime_ns == stamp
    images_a = _hashes(tmp_path / "a" / "images")
    assert len(images_a) == 27 and images_a == _hashes(tmp_path / "b" / "images")
    # a tree without its marker (e.g. generation killed before the marker) is regenerated,
    # byte-identical
    (cache / "phantom-1p-seed0.json").unlink()
    logs = []
    assert ensure_phantom(cache, 1, 0, False, logs.append) == root
    assert "generating" in logs[0] and _hashes(root) == phantom
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_env_var_picks_the_cache_and_a_legacy_phantom_folder_is_pointed_out(tmp_path, monkeypatch):
    monkeypatch.setenv("PETCTIQA_PHANTOM_CACHE", str(tmp_path / "env-cache"))
    calls = []

    def fake_tree(out_dir, patients, seed, progress):
        calls.append((patients, seed))
        (Path(out_dir) / "x.dcm").parent.mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "x.dcm").write_bytes(b"dicom")

    monkeypatch.setattr("petctiqa.phantom.write_phantom_tree", fake_tree)
    logs = []
    root = ensure_phantom(None, 3, 7, False, logs.append)
    assert root == tmp_path / "env-cache" / "phantom-3p-seed7"
    assert (root / "x.dcm").read_bytes() == b"dicom" and calls == [(3, 7)]
    assert ensure_phantom(None, 3, 7, False, logs.append) == root and calls == [(3, 7)]
    from petctiqa.dataset.phantom_cache import legacy_phantom_note

    (tmp_path / "ds" / "phantom-dicom").mkdir(parents=True)
    note = legacy_phantom_note(tmp_path / "ds")
    assert note is not None and "phantom-dicom" in note and "no longer used" in note
    assert legacy_phantom_note(tmp_path / "elsewhere") is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_cache_is_a_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(
            DatasetError, match=r"cannot keep the built-in phantom there.*phantom_cache setting"
        ):
            ensure_phantom(locked / "cache", 1, 0, False, print)
    finally:
        locked.chmod(0o700)


def test_a_cache_path_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _build(tmp_path / "ds", "--phantom-cache", str(blocker / "cache"))
    assert result.exit_code != 0
    assert "cannot keep the built-in phantom there" in result.output
    assert "Traceback" not in result.output
