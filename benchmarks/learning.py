"""Proof that `--preset cpu` learns radiologists' MOS on unseen patients, with its ablations.

    .venv/bin/python benchmarks/learning.py [--data ../shared/data/pet-ct-iqa-ds-dev]
        [--directions P1:P2,P2:P1] [--ablations P1:P2] [--out bench-learning/]

For each direction TRAIN:TEST it runs the `cpu` preset (generator pretraining on the training
patient's own clean references, then fine-tuning on its rated images) and prints wall time and
the LAST epoch's SROCC/PLCC on the test patient (no choice made on test data), next to the
level-table baseline (true levels -> mean training MOS of the cell) and the hand-made-feature
baseline fitted on the same training images. For each direction in --ablations it also runs:
no pretraining; 224-px bicubic resize instead of native crops (pretraining and fine-tuning);
MS-IQA (random init, paper recipe) given the same CPU time as the cpu recipe took; pretraining
with augmentation; and augmentation with the parameters+ranking target (--variants chooses).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from petctiqa.iqa.data import load_iqa_dataset
from petctiqa.iqa.handcrafted import fit_handcrafted
from petctiqa.iqa.preprocess import Preprocessing
from petctiqa.iqa.presets import get_preset, preset_options, train_with_recipe
from petctiqa.iqa.train_report import correlations
from petctiqa.iqa.train_setup import TrainOptions

ROOT = Path(__file__).resolve().parents[1]


def _no_pretraining(options, pretrain, budget):
    return options, None


def _resize_224(options, pretrain, budget):
    return replace(options, preprocessing=Preprocessing(size=224)), pretrain


def _msiqa_equal_time(options, pretrain, budget):
    msiqa = TrainOptions(epochs=1000, device="cpu", progress=False, max_seconds=budget, amp="off")
    return msiqa, None


def _pretrain_field(**changes):
    return lambda options, pretrain, budget: (options, replace(pretrain, **changes))


VARIANTS = {
    "cpu preset": lambda options, pretrain, budget: (options, pretrain),
    "no pretraining": _no_pretraining,
    "224 resize": _resize_224,
    "MS-IQA, equal time": _msiqa_equal_time,
    "augment on": _pretrain_field(augment=True),
    "augment off": _pretrain_field(augment=False),
    "ranking target": _pretrain_field(target="parameters+ranking"),
    "parameters target": _pretrain_field(target="parameters"),
    "augment + ranking target": _pretrain_field(augment=True, target="parameters+ranking"),
    "pretrain 500 steps": _pretrain_field(steps=500),
}
# The preset pretrains without augmentation on the parameters target, so "augment off" and
# "parameters target" would repeat it; these are the ablations docs/learning.md reports.
DEFAULT_ABLATIONS = (
    "no pretraining,224 resize,MS-IQA, equal time,augment on,augment + ranking target"
)


def run_recipe(dataset, out: Path, train_p: str, test_p: str, variant: str, budget: float = 0.0):
    """(seconds, recipe result) of one variant of the cpu preset."""
    preset = get_preset("cpu")
    options = preset_options(preset, {"device": "cpu", "progress": False})
    options, pretrain = VARIANTS[variant](options, preset.pretrain, budget)
    started = time.perf_counter()
    result = train_with_recipe(dataset, out, options, pretrain, None, None, [train_p], [test_p])
    seconds = time.perf_counter() - started
    return seconds, result


def handcrafted_figures(dataset, train_p: str, test_p: str) -> tuple[float, float]:
    train, test = dataset.subset([train_p]), dataset.subset([test_p])
    pred = fit_handcrafted(train).predict(test)
    figures = correlations(pred, np.array([s.mos for s in test]))
    return figures["test_srocc"], figures["test_plcc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/pet-ct-iqa-ds-dev"))
    parser.add_argument("--directions", default="P1:P2,P2:P1")
    parser.add_argument("--ablations", default="P1:P2", help="directions to ablate ('' = none)")
    parser.add_argument(
        "--variants",
        default=DEFAULT_ABLATIONS,
        help=f"ablation variants, comma-separated, from: {', '.join(VARIANTS)}. A variant "
        "that equals the preset (e.g. 'augment on' when the preset augments) repeats it.",
    )
    parser.add_argument("--out", default="bench-learning")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_iqa_dataset(Path(args.data))
    out = Path(args.out)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'direction':10s} {'variant':22s} {'minutes':>7s} {'SROCC':>7s} {'PLCC':>7s}")
    cpu_seconds: dict[str, float] = {}
    for direction in [d for d in args.directions.split(",") if d]:
        train_p, test_p = direction.split(":")
        seconds, result = run_recipe(
            dataset, out / f"{train_p}-{test_p}-cpu", train_p, test_p, "cpu preset"
        )
        cpu_seconds[direction] = seconds
        print(
            f"{direction:10s} {'cpu preset':22s} {seconds / 60:7.1f} "
            f"{result.last_srocc:7.4f} {result.last_plcc:7.4f}",
            flush=True,
        )
        print(
            f"{direction:10s} {'level table (levels)':22s} {'':7s} "
            f"{result.level_table_srocc:7.4f} {result.level_table_plcc:7.4f}"
        )
        s, p = handcrafted_figures(dataset, train_p, test_p)
        print(f"{direction:10s} {'hand-made features':22s} {'':7s} {s:7.4f} {p:7.4f}", flush=True)
    for direction in [d for d in args.ablations.split(",") if d]:
        train_p, test_p = direction.split(":")
        budget = cpu_seconds.get(direction, 600.0)
        for variant in _variant_list(args.variants):
            folder = out / f"{train_p}-{test_p}-{variant.split(',')[0].replace(' ', '-')}"
            seconds, result = run_recipe(dataset, folder, train_p, test_p, variant, budget)
            epochs = result.last_epoch
            print(
                f"{direction:10s} {variant:22s} {seconds / 60:7.1f} "
                f"{result.last_srocc:7.4f} {result.last_plcc:7.4f}  ({epochs} epochs)",
                flush=True,
            )


def _variant_list(text: str) -> list[str]:
    # "MS-IQA, equal time" holds a comma: match known names greedily instead of splitting.
    chosen, rest = [], text.strip()
    while rest:
        name = next((v for v in VARIANTS if rest.startswith(v)), None)
        if name is None:
            raise SystemExit(f"unknown variant in {rest!r}; choose from {', '.join(VARIANTS)}")
        chosen.append(name)
        rest = rest[len(name) :].lstrip(", ")
    return chosen


if __name__ == "__main__":
    main()
