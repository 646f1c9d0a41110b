from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from petctiqa.errors import DatasetError
from petctiqa.iqa.data import (
    DataWarning,
    load_iqa_dataset,
    patient_folds,
    patient_split,
)
from petctiqa.iqa.evaluation import level_table_lopo
from petctiqa.iqa.metrics import evaluate_predictions, plcc, srocc
from petctiqa.iqa.preprocess import load_input
from petctiqa_cli.main import cli


def test_release_layout_on_the_real_sample(shared_data):
    ds = load_iqa_dataset(shared_data / "pet-ct-iqa-ds-dev")
    assert ds.layout == "pet-ct-iqa-ds"
    assert len(ds.samples) == 270 and ds.groups == ["P1", "P2"]
    first = ds.samples[0]
    assert first.image.name == "002.jpg" and first.mos == 1.4 and first.group == "P2"
    assert first.levels == (0, 2, 2) and first.slice_id == "P2_s10"
    assert first.reference is not None and first.reference.name == "530.jpg"
    x = load_input(first.image)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert patient_split(ds) == (["P1"], ["P2"])
    assert patient_folds(ds.groups, 2) == [(["P2"], ["P1"]), (["P1"], ["P2"])]


def test_level_table_leave_one_patient_out_on_the_real_sample(shared_data):
    rows = level_table_lopo(load_iqa_dataset(shared_data / "pet-ct-iqa-ds-dev"))
    # Notes: 0.942 on the 4 published patients; our 2-patient half gives (P1, P2):
    assert [r[0] for r in rows] == ["P1", "P2"]
    assert rows[0][1] == pytest.approx(0.924313, abs=1e-6)
    assert rows[1][1] == pytest.approx(0.947704, abs=1e-6)
    assert np.mean([r[1] for r in rows]) == pytest.approx(0.936009, abs=1e-6)
    assert np.mean([r[2] for r in rows]) == pytest.approx(0.956301, abs=1e-6)


def test_ldctiqac_layout_with_float_tiffs(tmp_path):
    import tifffile

    (tmp_path / "image").mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        tifffile.imwrite(
            tmp_path / "image" / f"{i:04d}.tif", rng.random((32, 32), dtype=np.float32)
        )
    (tmp_path / "train.json").write_text(
        json.dumps({"0000.tif": 2.8, "0001.tif": 0.4, "0002.tif": 4})
    )
    with pytest.warns(DataWarning, match="no patient IDs.*per IMAGE, not by patient"):
        ds = load_iqa_dataset(tmp_path)
    assert ds.layout == "ldctiqac2023" and not ds.grouped
    assert [s.mos for s in ds.samples] == [2.8, 0.4, 4.0]
    assert [s.group for s in ds.samples] == ["0000.tif", "0001.tif", "0002.tif"]
    x = load_input(ds.samples[0].image, 64)
    assert x.shape == (3, 64, 64)
    assert np.array_equal(x[0], x[2])


def _build_dataset(root, splits):
    (root / "images").mkdir(parents=True)
    rows = [
        "# written by collect-ratings",
        "image,mos,patient_id,slice_id,poisson_level,gaussian_level,jpeg_level,split",
    ]
    for k, (patient, split) in enumerate(splits):
        Image.new("RGB", (16, 16), (k * 20, 0, 0)).save(root / "images" / f"{patient}_{k}.png")
        rows.append(f"images/{patient}_{k}.png,{k % 4},{patient},{patient}_s1,{k % 3},0,0,{split}")
    (root / "mos.csv").write_text("\n".join(rows) + "\n")


def test_build_dataset_layout_and_patient_split(tmp_path):
    _build_dataset(tmp_path / "a", [("PA", "train"), ("PA", "train"), ("PB", "test")])
    ds = load_iqa_dataset(tmp_path / "a")
    assert ds.layout == "build-dataset"
    assert ds.samples[2].levels == (2, 0, 0)
    assert patient_split(ds) == (["PA"], ["PB"])
    _build_dataset(tmp_path / "b", [("PA", "train"), ("PA", "test"), ("PB", "test")])
    with pytest.raises(DatasetError, match="patient PA is in both"):
        load_iqa_dataset(tmp_path / "b")


def test_generic_csv_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("path,mos\nmissing.png,2\n")
    with pytest.raises(DatasetError, match="missing.png"):
        load_iqa_dataset(tmp_path / "bad.csv")
    with pytest.raises(DatasetError, match="no mos.csv"):
        load_iqa_dataset(tmp_path)
    with pytest.raises(
        DatasetError, match=r"^folds 5: need 2 <= folds <= number of patients \(2\)$"
    ) as info:
        patient_folds(["a", "b"], 5)
    assert info.value.setting == "folds"


def test_too_many_folds_names_the_option_on_the_command_line(tiny_csv, tmp_path):
    args = ["train", "--data", str(tiny_csv), "--out", str(tmp_path / "run"), "--folds", "9"]
    result = CliRunner().invoke(cli, [*args, "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.stderr.endswith(
        "error: folds 9: need 2 <= folds <= number of patients (4) (option --folds)\n"
    )
    assert not (tmp_path / "run").exists()


def test_metrics_values_and_bootstrap():
    mos = np.array([1.0, 2.0, 3.0, 4.0, 0.5, 2.5])
    pred = np.array([1.1, 1.9, 3.5, 3.9, 0.2, 2.0])
    assert srocc(pred, mos) == pytest.approx(1.0)
    assert plcc(pred, mos) == pytest.approx(np.corrcoef(pred, mos)[0, 1])
    report = evaluate_predictions(pred, mos, n_boot=200, seed=3)
    assert report.krcc.value == pytest.approx(1.0)
    assert report.rmse.value == pytest.approx(np.sqrt(np.mean((pred - mos) ** 2)))
    assert report.plcc.ci_low <= report.plcc.value <= report.plcc.ci_high
    again = evaluate_predictions(pred, mos, n_boot=200, seed=3)
    assert again == report
    assert srocc(-pred, mos) == pytest.approx(-1.0)
