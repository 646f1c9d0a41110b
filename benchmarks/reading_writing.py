"""Benchmark: the small fast paths whose figures used to sit in code comments.

Run: .venv/bin/python benchmarks/reading_writing.py DICOM_DIR [--files 200] [--repeat 5]
DICOM_DIR is any DICOM tree (the phantom cache works: ``~/.cache/petctiqa/phantom-20p-seed0``).
Prints, per file or slice, the best of ``--repeat`` timings (``time.perf_counter``, one
thread; on a shared VM the best of several is the least disturbed):

- header: :func:`petctiqa.dicom.header_scan.scan_header` against ``pydicom.dcmread`` of the
  header only (:mod:`petctiqa.dicom.header_scan`'s reason to exist);
- pixels: :func:`petctiqa.dicom.volume.native_pixels` against pydicom's decoder
  (``pydicom.pixels.pixel_array``, what ``ds.pixel_array`` runs);
- rescale: :func:`petctiqa.dicom.volume.apply_rescale` with slope 1 (one pass) against the
  general multiply-then-add path;
- PNG: :func:`petctiqa.png.encode_png_rgb` (ISA-L) against zlib level 1 on the same
  filtered scanlines, on a 1192 x 470 image made from the first CT slice.
"""

from __future__ import annotations

import argparse
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import pixel_array as decode

from petctiqa.dicom.header_scan import scan_header
from petctiqa.dicom.index import INDEX_KEYWORDS
from petctiqa.dicom.volume import apply_rescale, native_pixels
from petctiqa.png import encode_png_rgb, filtered_scanlines


def best_ms(work: Callable[[], object], items: int, repeat: int) -> float:
    """Best wall time of ``repeat`` runs of ``work``, in ms per item."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return 1000 * best / items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dicom", type=Path)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    files = sorted(p for p in args.dicom.rglob("*.dcm"))[: args.files]
    if not files:
        raise SystemExit(f"{args.dicom}: no .dcm files")
    n = len(files)
    scan = best_ms(lambda: [scan_header(f, INDEX_KEYWORDS) for f in files], n, args.repeat)
    full = best_ms(
        lambda: [pydicom.dcmread(f, stop_before_pixels=True) for f in files], n, args.repeat
    )
    print(f"header, {n} files: scan_header {scan:.3f} ms, pydicom dcmread {full:.3f} ms per file")
    datasets = [pydicom.dcmread(f) for f in files]
    native = best_ms(lambda: [native_pixels(ds) for ds in datasets], n, args.repeat)
    # pydicom.pixels.pixel_array decodes each time (ds.pixel_array caches its first result)
    decoded = best_ms(lambda: [decode(ds) for ds in datasets], n, args.repeat)
    print(f"pixels: native_pixels {native:.3f} ms, pydicom {decoded:.3f} ms per slice")
    stored = datasets[0].pixel_array.astype(np.int16)
    out = np.empty(stored.shape, np.float32)

    def general() -> None:
        np.multiply(stored, 1.0, out=out, casting="unsafe")
        out.__iadd__(np.float32(-1024))

    one = best_ms(lambda: [apply_rescale(stored, 1.0, -1024.0, out) for _ in range(50)], 50, 5)
    two = best_ms(lambda: [general() for _ in range(50)], 50, 5)
    print(f"rescale {stored.shape}: slope-1 path {one:.3f} ms, general path {two:.3f} ms")
    grey = np.clip((stored.astype(np.float32) + 1024) / 8, 0, 255).astype(np.uint8)
    rgb = np.ascontiguousarray(np.resize(np.stack([grey] * 3, axis=-1), (470, 1192, 3)))
    scan_bytes = filtered_scanlines(rgb).tobytes()
    fast = best_ms(lambda: encode_png_rgb(rgb), 1, args.repeat)
    plain = best_ms(lambda: zlib.compress(scan_bytes, 1), 1, args.repeat)
    print(
        f"PNG 1192 x 470: encode_png_rgb {fast:.1f} ms ({len(encode_png_rgb(rgb)) // 1000} KB), "
        f"zlib level 1 {plain:.1f} ms ({len(zlib.compress(scan_bytes, 1)) // 1000} KB)"
    )


if __name__ == "__main__":
    main()
