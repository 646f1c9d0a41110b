"""Cost of re-checking a complete fetched series on a rerun of ``petctiqa fetch``.

Writes one full-size phantom study (512x512 CT, 128x128 PET) into a temporary folder, records it
as fetch does, then times, per run over both series: the size check alone, the size + SHA-256
check (what fetch does on every run), the header check fetch does after it (``petctiqa.dicom``'s
index of each series folder), and, for scale, a pydicom header read of every file. Files are read from the page cache (just written); a cold cache adds the
disk's read time to the hash check.

    .venv/bin/python benchmarks/fetch_verify.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pydicom

from petctiqa.dicom.index import index_dicom_tree
from petctiqa.fetch.records import SeriesRecord, digest_file, record_problem
from petctiqa.phantom import write_phantom_study


def _best_of(repeats: int, action) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        study = write_phantom_study(Path(tmp), 1, seed=0)
        series = [sorted(study.ct_files), sorted(study.pet_files)]
        folders = [(Path(files[0]).parent, files) for files in series]
        records = [
            (folder, SeriesRecord(folder.name, {Path(f).name: digest_file(Path(f)) for f in fs}))
            for folder, fs in folders
        ]
        n_files = sum(len(fs) for fs in series)
        n_bytes = sum(Path(f).stat().st_size for fs in series for f in fs)
        sizes = _best_of(
            args.repeats, lambda: [record_problem(d, r, hashes=False) for d, r in records]
        )
        hashes = _best_of(args.repeats, lambda: [record_problem(d, r) for d, r in records])
        indexed = _best_of(args.repeats, lambda: [index_dicom_tree(d) for d, _ in folders])
        headers = _best_of(
            args.repeats,
            lambda: [pydicom.dcmread(f, stop_before_pixels=True) for fs in series for f in fs],
        )
    print(f"{n_files} files, {n_bytes / 1e6:.1f} MB (one PET/CT pair)")
    print(f"sizes only:     {sizes * 1e3:8.1f} ms")
    print(f"sizes + SHA-256:{hashes * 1e3:8.1f} ms  ({n_bytes / hashes / 1e6:.0f} MB/s)")
    print(f"dicom index:    {indexed * 1e3:8.1f} ms")
    print(f"pydicom headers:{headers * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
