"""The built-in phantom's DICOM tree, generated once into a cache folder outside any dataset.

The full phantom is 569 MB of DICOM: kept inside the dataset folder it was copied with every
copy of the dataset. It lives instead in ``<cache>/phantom-<N>p-seed<S>/`` where ``<cache>`` is
(first that is set) the build's ``--phantom-cache`` option, ``$PETCTIQA_PHANTOM_CACHE``,
``$XDG_CACHE_HOME/petctiqa`` or ``~/.cache/petctiqa``. The files are byte-identical wherever they
are written (:func:`petctiqa.phantom.write_phantom_tree` is deterministic), so the dataset's
images do not depend on the cache's place, and a build's settings do not record it.

A tree is trusted only with its marker ``phantom-<N>p-seed<S>.json`` beside it, written after
the tree was renamed into place; an exclusive lock file serialises two builds that want the same
phantom at once (the second one reuses the first one's tree).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from petctiqa import __version__, phantom
from petctiqa.atomic import atomic_write_text
from petctiqa.errors import DatasetError

CACHE_ENV = "PETCTIQA_PHANTOM_CACHE"
LEGACY_DIR = "phantom-dicom"
"""Where builds before the cache kept the phantom: inside the dataset folder."""

Log = Callable[[str], None]


def default_phantom_cache() -> Path:
    """``$PETCTIQA_PHANTOM_CACHE``, else ``$XDG_CACHE_HOME/petctiqa``, else ``~/.cache/petctiqa``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "petctiqa"


def phantom_root(cache: Path, patients: int, seed: int) -> Path:
    """The phantom tree's folder for (patients, seed) inside ``cache``."""
    return Path(cache) / f"phantom-{patients}p-seed{seed}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ensure_phantom(cache: Path | None, patients: int, seed: int, progress: bool, log: Log) -> Path:
    """The phantom DICOM tree for (patients, seed) in ``cache`` (None: the default cache),
    generated once and then reused; logs which, and where."""
    cache = Path(cache) if cache is not None else default_phantom_cache()
    root = phantom_root(cache, patients, seed)
    marker = root.with_name(root.name + ".json")
    wanted = {"patients": patients, "seed": seed, "petctiqa_version": __version__}
    what = f"the built-in synthetic PET/CT phantom ({patients} patients, seed {seed})"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with _locked(cache / f".{root.name}.lock"):
            if root.is_dir() and _read_marker(marker) == wanted:
                log(f"no DICOM source given: using {what} already in {root}")
                return root
            log(f"no DICOM source given: generating {what} in {root} (a cache outside the dataset)")
            tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=cache))
            try:
                phantom.write_phantom_tree(tmp, patients=patients, seed=seed, progress=progress)
                marker.unlink(missing_ok=True)
                if root.exists():
                    shutil.rmtree(root)
                os.replace(tmp, root)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            atomic_write_text(marker, json.dumps(wanted, indent=2) + "\n")
    except OSError as exc:
        raise DatasetError(
            f"{cache}: cannot keep the built-in phantom there ({exc.strerror or exc}); "
            f"the cache folder is chosen by the build's phantom_cache setting or ${CACHE_ENV}"
        ) from None
    return root


def legacy_phantom_note(out_dir: Path) -> str | None:
    """A hint when an earlier build left its phantom inside ``out_dir`` (no longer used)."""
    legacy = Path(out_dir) / LEGACY_DIR
    if not legacy.is_dir():
        return None
    return (
        f"note: {legacy} was written by an earlier petctiqa inside the dataset and is no longer "
        "used (the phantom now lives in a cache folder); delete it to save space"
    )
