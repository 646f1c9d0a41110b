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
    from petctiqa.iqa.data import load_iqa_dataset
    from petctiqa.iqa.train import TrainOptions, train

    out = tmp_path_factory.mktemp("run")
    options = TrainOptions(epochs=1, batch_size=4, device="cpu", model=small_config, progress=False)
    return train(load_iqa_dataset(tiny_csv), out, options)


@pytest.fixture(scope="session")
def custom_protocol(tmp_path_factory) -> Path:
    """The shipped dataset protocol renamed "custom-w400": 128 px renders, CT window W400."""
    from importlib import resources

    from petctiqa.protocol import load_dataset_protocol

    text = (resources.files("petctiqa_protocols") / "pet-ct-iqa-ds.toml").read_text()
    for old, new in (
        ('name = "pet-ct-iqa-ds"', 'name = "custom-w400"'),
        ("size = 512 ", "size = 128 "),
        ("ct_window_width = 350.0", "ct_window_width = 400.0"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path_factory.mktemp("protocol") / "custom-w400.toml"
    path.write_text(text)
    render = load_dataset_protocol(path).render
    assert (render.size, render.ct_window_width) == (128, 400.0)
    return path


@pytest.fixture(scope="session")
def phantom_dicom(tmp_path_factory) -> Path:
    """Two small phantom PET/CT studies (CT 64 x 64, PET 32 x 32) in the NBIA layout."""
    from petctiqa.phantom import write_phantom_study

    root = tmp_path_factory.mktemp("phantom")
    for index in (1, 2):
        write_phantom_study(root, index, seed=0, ct_matrix=64, pet_matrix=32)
    return root


@pytest.fixture(scope="session")
def rated_build(tmp_path_factory, phantom_dicom, custom_protocol) -> Path:
    """The real pipeline: build-dataset (2 patients x 1 slice x 27, custom protocol), then
    collect-ratings simulate (3 SIMULATED raters) and export: mos.csv with the banner."""
    from click.testing import CliRunner

    from petctiqa_cli.main import cli

    out = tmp_path_factory.mktemp("rated") / "ds"
    runner = CliRunner()
    steps = (
        ["build-dataset", "--quiet", "--src", str(phantom_dicom), "--out", str(out),
         "--protocol", str(custom_protocol), "--patients", "2", "--slices", "1", "--jobs", "1"],
        ["collect-ratings", "simulate", "--dataset", str(out), "--raters", "3"],
        ["collect-ratings", "export", "--dataset", str(out), "--no-mle"],
    )  # fmt: skip
    for args in steps:
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
    assert (out / "mos.csv").read_text().startswith("# SIMULATED")
    return out
