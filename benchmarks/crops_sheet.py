"""Benchmark: the per-slice cost of the 1:1 crops sheet next to the contact sheet.

Run: .venv/bin/python benchmarks/crops_sheet.py DATASET [--slices 10] [--repeat 5]
DATASET is a finished ``build-dataset`` folder (512-px JPEGs for the build's real figure). Each
slice's 27 image files are read once; then the contact sheet and the crops sheet are made
``--repeat`` times each, alternating, and the best CPU time (``time.process_time``, one thread)
per slice is reported: on a shared VM the best of several is the least disturbed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from petctiqa.dataset.manifest import read_manifest
from petctiqa.dataset.sheets import SheetTile, contact_sheet_png, crops_sheet_png, jpeg_size


def slice_tiles(root: Path, count: int) -> list[list[SheetTile]]:
    by_slice: dict[str, list[SheetTile]] = {}
    for r in read_manifest(root / "manifest.csv"):
        tile = SheetTile(
            r.poisson_level, r.gaussian_level, r.jpeg_level, r.jpeg_quality,
            (root / r.image).read_bytes(),
        )  # fmt: skip
        by_slice.setdefault(r.slice_id, []).append(tile)
    return [by_slice[k] for k in sorted(by_slice)[:count]]


def best_ms(make, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        make()
        times.append(time.process_time() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    contact, crops = [], []
    for tiles in slice_tiles(args.dataset, args.slices):
        rows, cols = jpeg_size(tiles[0].encoded) or (0, 0)
        contact.append(best_ms(lambda t=tiles: contact_sheet_png("t", t), args.repeat))
        crops.append(
            best_ms(lambda t=tiles, s=(cols, rows): crops_sheet_png("t", t, s), args.repeat)
        )
    n = len(contact)
    print(f"{n} slices of {args.dataset}, best of {args.repeat}, CPU ms per slice:")
    print(f"  contact sheet: median {sorted(contact)[n // 2]:.1f} (min {min(contact):.1f})")
    print(f"  crops sheet:   median {sorted(crops)[n // 2]:.1f} (min {min(crops):.1f})")


if __name__ == "__main__":
    main()
