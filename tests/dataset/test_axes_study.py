"""A reader study, its export and the trainer's loader on datasets of the new protocols
(issue #15.4): pet-ct-lowdose (a grid of PET/CT-domain axes) and pet-ct-iqa-ds-continuous
(every image draws its parameters), built small on the phantom, rated by simulated raters
through a latent-quality model, exported and loaded for training and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.stats import spearmanr

from petctiqa.dataset.folder import SIMULATED_BANNER
from petctiqa.dataset.manifest import read_manifest
from petctiqa.iqa.data import load_iqa_dataset
from petctiqa.ratings.study import open_study
from petctiqa.ratings.web import create_app, training_anchors
from petctiqa_cli.main import cli

LOWDOSE_LEVELS = [
    "pet_ct_misregistration_level",
    "pet_count_reduction_level",
    "ct_dose_reduction_level",
    "jpeg_level",
]
LOWDOSE_VALUES = [
    "pet_ct_misregistration_shift",
    "pet_count_reduction_fraction",
    "ct_dose_reduction_fraction",
    "jpeg_quality",
]
CONTINUOUS_VALUES = ["impulse_poisson_lambda", "gaussian_sigma", "jpeg_quality"]

# made-up latent quality (0..4 scale) that falls with every degradation, not a claim about
# real readers: 4.0 for an undistorted image, below 0 (clipped to 0) for the worst
LATENT = {
    "pet-ct-lowdose": {
        "intercept": 0.5,
        "coefficients": {
            "pet_ct_misregistration_shift": -0.1,
            "pet_count_reduction_fraction": 2.0,
            "ct_dose_reduction_fraction": 1.5,
        },
    },
    "pet-ct-iqa-ds-continuous": {
        "intercept": 0.0,
        "coefficients": {
            "impulse_poisson_lambda": -200.0,
            "gaussian_sigma": -0.2,
            "jpeg_quality": 0.04,
        },
    },
}


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module", params=["pet-ct-lowdose", "pet-ct-iqa-ds-continuous"])
def rated(request, tmp_path_factory, small_phantom) -> tuple[str, Path]:
    """A 2-patient x 1-slice build of the protocol at 192 px (NIQE needs 2 sharp 96-pixel patches of the one training reference), rated by 3 simulated raters
    through its latent-quality model and exported (``mos.csv`` in the folder)."""
    base = request.param
    root = tmp_path_factory.mktemp(base)
    protocol = root / "small.toml"
    protocol.write_text(
        f'extends = "{base}"\n[protocol]\nname = "{base}-small"\nversion = 1\n'
        "[render]\nsize = 192\n"
    )
    dataset = root / "ds"
    result = run(
        "build-dataset", "--quiet", "--src", small_phantom, "--out", dataset,
        "--protocol", protocol, "--patients", 2, "--slices", 1, "--jobs", 1,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    refused = run("collect-ratings", "simulate", "--dataset", dataset, "--raters", 3)
    assert refused.exit_code != 0
    assert "calibrated to the published PET-CT-IQA-DS MOS table" in refused.output
    assert "give it with --latent-model FILE" in refused.output
    assert not (dataset / "ratings.sqlite").exists()
    model = root / "latent.json"
    model.write_text(json.dumps(LATENT[base]))
    result = run(
        "collect-ratings", "simulate", "--dataset", dataset, "--raters", 3,
        "--latent-model", model,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "stored 162 SIMULATED ratings from 3 rater(s)" in result.output
    result = run("collect-ratings", "export", "--dataset", dataset)
    assert result.exit_code == 0, result.output
    return base, dataset


def _latent(base: str, row: pd.Series) -> float:
    model = LATENT[base]
    return model["intercept"] + sum(w * float(row[c]) for c, w in model["coefficients"].items())


def test_study_images_carry_the_protocols_axes(rated):
    base, dataset = rated
    study = open_study(dataset)
    try:
        records = {r.image: r for r in read_manifest(dataset / "manifest.csv")}
        assert len(study.images) == len(records) == 54
        for image in study.images:
            record = records[image.image]
            assert image.parameters == record.parameters
            assert image.levels == tuple(
                (a.level_column, a.level) for a in record.axes if a.level is not None
            )
        first = study.images[0]
        if base == "pet-ct-lowdose":
            assert [c for c, _ in first.levels] == LOWDOSE_LEVELS
            assert list(first.parameters) == LOWDOSE_VALUES
            assert first.cell == (0, 0, 0, 0) and study.images[-1].cell == (2, 2, 2, 0)
        else:
            assert first.levels == () and first.cell == ()
            assert list(first.parameters) == CONTINUOUS_VALUES
    finally:
        study.store.close()


def test_web_app_serves_the_study_and_takes_a_rating(rated, tmp_path):
    _, dataset = rated
    study = open_study(dataset, db=tmp_path / "web.sqlite", seed=1)
    try:
        (alice,) = study.store.add_raters(["alice"])
        client = create_app(dataset, study.store, study.scale, study.images).test_client()
        state = client.get(f"/api/r/{alice.token}/state").get_json()
        assert state["total"] == 54 and len(state["training"]) == 4  # 2 slices x 2 anchors
        cur = state["current"]
        assert client.get(cur["url"]).data == (dataset / cur["image"]).read_bytes()
        rating = {"image": cur["image"], "position": cur["position"], "score": 3}
        assert client.post(f"/api/r/{alice.token}/rating", json=rating).status_code == 201
        assert [r.score for r in study.store.ratings() if r.rater == "alice"] == [3]
    finally:
        study.store.close()


def test_training_anchor_is_the_most_distorted_image_of_its_slice(rated):
    base, dataset = rated
    study = open_study(dataset)
    study.store.close()
    anchors = training_anchors(study.images, seed=0, slices=1)
    worst = next(im for im in study.images if im.image == anchors[1][0])
    group = [im for im in study.images if im.slice_id == worst.slice_id]
    assert anchors[0][0] == worst.reference
    if base == "pet-ct-lowdose":
        assert worst.cell == (2, 2, 2, 0)
    else:
        # the image furthest from neutral (lambda 0, sigma 0, quality 100), each axis scaled
        # by its largest distance on the study's images
        values = np.array([list(im.parameters.values()) for im in study.images])
        reach = np.abs(values - [0.0, 0.0, 100.0]).max(axis=0)
        distance = {
            im.image: float(
                np.sum(np.abs(np.array(list(im.parameters.values())) - [0, 0, 100]) / reach)
            )
            for im in group
        }
        assert worst.image == max(distance, key=distance.get)
        assert distance[worst.image] > 1.5


def test_export_carries_the_axes_and_follows_the_latent_model(rated):
    base, dataset = rated
    text = (dataset / "mos.csv").read_text()
    assert text.startswith(SIMULATED_BANNER + "\n")
    mos = pd.read_csv(dataset / "mos.csv", comment="#")
    manifest = pd.read_csv(dataset / "manifest.csv")
    assert list(mos.image) == list(manifest.image) and (mos.n == 3).all()
    head = list(mos.columns)
    if base == "pet-ct-lowdose":
        levels = head[head.index("slice_id") + 1 : head.index("split")]
        assert levels == LOWDOSE_LEVELS
        assert head[-4:] == LOWDOSE_VALUES
        for column in LOWDOSE_LEVELS + LOWDOSE_VALUES:
            assert mos[column].tolist() == manifest[column].tolist(), column
    else:
        assert head.index("split") == head.index("slice_id") + 1  # no level columns
        assert not any(c.endswith("_level") for c in head)
        assert head[-3:] == CONTINUOUS_VALUES
        for column in CONTINUOUS_VALUES:
            assert mos[column].tolist() == manifest[column].tolist(), column
    latent = [_latent(base, row) for _, row in mos.iterrows()]
    # 3 raters with bias and noise, scores rounded to 0..4: the order follows, loosely
    assert spearmanr(latent, mos.mos).statistic > 0.75
    assert (dataset / "agreement.png").is_file()


def test_trainer_loads_the_rated_folder_and_evaluate_picks_the_baseline(rated, tmp_path):
    base, dataset = rated
    data = load_iqa_dataset(dataset)
    assert data.layout == "build-dataset" and data.simulated and len(data.samples) == 54
    assert {s.split for s in data.samples} == {"train", "test"}
    records = {r.image: r for r in read_manifest(dataset / "manifest.csv")}
    for sample in data.samples:
        record = records[str(sample.image.relative_to(dataset))]
        assert dict(sample.parameters) == record.parameters
        assert sample.reference == dataset / record.reference
        if base == "pet-ct-lowdose":
            assert sample.levels == tuple(a.level for a in record.axes)
        else:
            assert sample.levels is None
    out = tmp_path / "table.csv"
    result = run("evaluate", "--data", dataset, "--baselines", "--bootstrap", 10, "--out", out)
    assert result.exit_code == 0, result.output
    assert "SIMULATED" in result.output
    methods = pd.read_csv(out).set_index("method")
    lopo = run("evaluate", "--data", dataset, "--level-table-lopo")
    if base == "pet-ct-lowdose":
        assert lopo.exit_code == 0, lopo.output
        assert "level table, test patient PHANTOM-000" in lopo.output
    else:
        assert lopo.exit_code != 0
        assert "have no distortion levels" in lopo.output and "Traceback" not in lopo.output
    if base == "pet-ct-lowdose":
        assert "level table" in methods.index
        assert not any(m.startswith("parameter regression") for m in methods.index)
        assert methods.loc["level table", "srocc"] > 0.8
    else:
        assert "level table" not in methods.index
        assert "level table" not in result.output
        regression = "parameter regression (fit on train)"
        assert regression in result.output
        assert methods.loc[regression, "srocc"] > 0.8


def test_dataset_json_records_only_the_distortions_the_build_used(rated):
    """An axes protocol records its axes, not the classic tables' defaults it never applies."""
    base, dataset = rated
    info = json.loads((dataset / "dataset.json").read_text())
    distortions = info["settings"]["protocol"]["distortions"]
    state = json.loads((dataset / ".build-state" / "build.json").read_text())
    assert state["protocol"]["distortions"] == distortions
    axes = [axis["distortion"] for axis in distortions["axes"]]
    if base == "pet-ct-lowdose":
        assert set(distortions) == {"axes"}
        assert axes == [
            "pet_ct_misregistration",
            "pet_count_reduction",
            "ct_dose_reduction",
            "jpeg",
        ]
        assert distortions["axes"][1]["levels"] == [1.0, 0.25, 0.1]
    else:
        assert distortions == {"axes": distortions["axes"], "images_per_slice": 27}
        assert axes == ["impulse_poisson", "gaussian", "jpeg"]
        assert distortions["axes"][2]["value_range"] == [40.0, 100.0]
