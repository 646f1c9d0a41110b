"""Fixtures for archive scoring: a random-init small MS-IQA checkpoint (ResNet only, 64 px),
a few tiny images and one small phantom study."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_checkpoint(path: Path, simulated: bool = False, seed: int = 0) -> Path:
    import torch

    from petctiqa.iqa.checkpoint import save_checkpoint
    from petctiqa.iqa.preprocess import Preprocessing
    from petctiqa.msiqa.model import MsIqa, MsIqaConfig

    torch.manual_seed(seed)
    config = MsIqaConfig(use_swin=False, image_size=64)
    model = MsIqa(config).eval()
    save_checkpoint(
        path,
        {
            "model_name": "msiqa",
            "config": config.to_dict(),
            "label_scale": {"low": 0.0, "high": 4.0},
            "model": model.state_dict(),
            "preprocessing": Preprocessing(size=64).to_dict(),
            "simulated": simulated,
        },
    )
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="session")
def simulated_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "sim.pt", simulated=True)


def make_images(folder: Path, n: int = 3, size: int = 48) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        img = rng.normal(128, 10 + 30 * i, (size, size, 3)).clip(0, 255).astype(np.uint8)
        paths.append(folder / f"img{i}.png")
        Image.fromarray(img).save(paths[-1])
    return paths


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    """ARCHIVE/images/img{0,1,2}.png and ARCHIVE/dicom/ (one 64-px phantom study)."""
    from petctiqa.phantom import write_phantom_study

    root = tmp_path_factory.mktemp("archive")
    make_images(root / "images")
    write_phantom_study(root / "dicom", 1, seed=3, ct_matrix=64, pet_matrix=32)
    return root
