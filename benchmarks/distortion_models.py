"""Figures of the data-domain distortion models on the real test slices (docs/distortions.md).

Prints, for PET count reduction (STS_001 whole-body PET, liver slice 150), CT dose reduction
and CT sparse views (CRLM-CT-1004 slice 25, liver), the expected counts, the noise or streaks
in the liver region per level and the time per call on this machine.

    .venv/bin/python benchmarks/distortion_models.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from petctiqa.distortions.ct_dose import CtDoseModel  # noqa: E402
from petctiqa.distortions.ct_sparse_view import SparseViewModel  # noqa: E402
from petctiqa.distortions.pet_counts import PetCountModel  # noqa: E402
from petctiqa.seeding import rng_for  # noqa: E402
from tests.conftest import SHARED_DATA  # noqa: E402
from tests.distortions import conftest as slices  # noqa: E402


def _unwrapped(fixture):
    return getattr(fixture, "__wrapped__", fixture)


def main() -> None:
    volumes = _unwrapped(slices.sts001_volumes)(SHARED_DATA)
    liver = _unwrapped(slices.liver_slice)(volumes)
    model = PetCountModel()
    ybar = model.expected_counts(liver.data)[0]
    truth = liver.data.pet[liver.liver]
    print(f"PET liver slice: {ybar.sum():,.0f} expected counts, liver SUV {truth.mean():.2f}")
    for mode in ("insert", "resimulate"):
        for fraction in (1.0, 0.5, 0.25, 0.1):
            started = time.perf_counter()
            out = PetCountModel(mode=mode)(liver.data, fraction, rng_for(0, f"{mode}{fraction}"))
            seconds = time.perf_counter() - started
            noise = (out.pet - liver.data.pet)[liver.liver].std()
            print(f"  {mode:10s} f={fraction:<5} added noise std {noise:.3f} SUV  {seconds:.2f} s")
    ct = _unwrapped(slices.crlm_ct)(SHARED_DATA)
    data, region = _unwrapped(slices.abdomen)(ct)
    print(f"CT abdomen slice: liver {data.ct_hu[region].mean():.1f} HU")
    for fraction in (0.5, 0.25, 0.1):
        started = time.perf_counter()
        noise = CtDoseModel().noise_hu(data.ct_hu, data.pixel_mm, fraction, rng_for(0, "ct"))
        seconds = time.perf_counter() - started
        print(
            f"  f={fraction:<5} inserted std {noise[region].std():.1f} HU, "
            f"mean {noise[region].mean():+.2f} HU  {seconds:.2f} s"
        )
    for views in (30, 60, 120, 240):
        started = time.perf_counter()
        streaks = SparseViewModel().streaks_hu(data.ct_hu, data.pixel_mm, views)
        seconds = time.perf_counter() - started
        print(
            f"  sparse {views:3d} views: streak std {streaks[region].std():.1f} HU, "
            f"mean {streaks[region].mean():+.2f} HU  {seconds:.2f} s"
        )


if __name__ == "__main__":
    main()
