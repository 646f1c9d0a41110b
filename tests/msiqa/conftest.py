"""Fixtures for the MS-IQA tests: a tiny rated image set and a small, fast model config
(ResNet-only at 64 x 64; Swin needs 224 and is exercised in the architecture tests)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_tiny_csv(folder: Path, n: int = 12, size: int = 64) -> Path:
    """n noisy grey images; MOS falls with the noise level; 4 patients (group P0..P3)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["path,mos,group"]
    for i in range(n):
        level = i % 4
        img = rng.normal(128, 5 + 30 * level, (size, size, 3)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:02d}.png")
        rows.append(f"img{i:02d}.png,{4 - level},P{i // 3}")
    path = folder / "tiny.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    return make_tiny_csv(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def small_config():
    from petctiqa.msiqa.model import MsIqaConfig

    return MsIqaConfig(use_swin=False, image_size=64)


@pytest.fixture(scope="session")
def trained_run(tiny_csv, small_config, tmp_path_factory):
    """One epoch of training on the tiny set (shared by checkpoint/score/evaluate tests)."""
    from petctiqa.msiqa.data import load_iqa_dataset
    from petctiqa.msiqa.train import TrainOptions, train

    out = tmp_path_factory.mktemp("run")
    options = TrainOptions(epochs=1, batch_size=4, device="cpu", model=small_config, progress=False)
    return train(load_iqa_dataset(tiny_csv), out, options)
