"""build-dataset with protocols of their own axes: pet-ct-lowdose (PET/CT-domain grid) and
pet-ct-iqa-ds-continuous (each image draws its parameters), on the small phantom."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from petctiqa.dataset.manifest import AxesImageRecord, manifest_text, read_manifest
from petctiqa.distort import decode_image
from petctiqa.distortions import get_distortion
from petctiqa.distortions.jpeg import encode_jpeg
from petctiqa.protocol import load_dataset_protocol
from petctiqa.seeding import rng_for
from petctiqa_cli.main import cli


def _small(tmp_path_factory, base: str) -> Path:
    """``base`` rendered at 128 px (the fast tests' size)."""
    path = tmp_path_factory.mktemp("protocol") / f"{base}-small.toml"
    path.write_text(
        f'extends = "{base}"\n[protocol]\nname = "{base}-small"\nversion = 1\n'
        "[render]\nsize = 128\n"
    )
    return path


def _build(protocol: Path, phantom: Path, out: Path, jobs: str = "1"):
    return CliRunner().invoke(
        cli,
        [
            "build-dataset", "--quiet", "--src", str(phantom), "--out", str(out),
            "--protocol", str(protocol), "--patients", "2", "--slices", "2", "--jobs", jobs,
        ],
    )  # fmt: skip


@pytest.fixture(scope="session")
def lowdose_protocol(tmp_path_factory) -> Path:
    return _small(tmp_path_factory, "pet-ct-lowdose")


@pytest.fixture(scope="session")
def lowdose_dataset(tmp_path_factory, small_phantom, lowdose_protocol) -> Path:
    out = tmp_path_factory.mktemp("lowdose") / "ds"
    result = _build(lowdose_protocol, small_phantom, out)
    assert result.exit_code == 0, result.output
    assert "dataset complete: 108 images (2 patients x 2 slices x 27)" in result.stdout
    return out


@pytest.fixture(scope="session")
def continuous_dataset(tmp_path_factory, small_phantom) -> Path:
    protocol = _small(tmp_path_factory, "pet-ct-iqa-ds-continuous")
    out = tmp_path_factory.mktemp("continuous") / "ds"
    result = _build(protocol, small_phantom, out)
    assert result.exit_code == 0, result.output
    return out


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_lowdose_grid_codes_levels_and_manifest_columns(lowdose_dataset):
    records = read_manifest(lowdose_dataset / "manifest.csv")
    assert len(records) == 108 and all(isinstance(r, AxesImageRecord) for r in records)
    header = (lowdose_dataset / "manifest.csv").read_text().splitlines()[0].split(",")
    assert header[12:20] == [
        "pet_ct_misregistration_level", "pet_ct_misregistration_shift",
        "pet_count_reduction_level", "pet_count_reduction_fraction",
        "ct_dose_reduction_level", "ct_dose_reduction_fraction",
        "jpeg_level", "jpeg_quality",
    ]  # fmt: skip
    first_slice = [r for r in records if r.slice_id == records[0].slice_id]
    assert [r.image_id.rsplit("_", 1)[1] for r in first_slice[:4]] == [
        "m0p0c0j0", "m0p0c1j0", "m0p0c2j0", "m0p1c0j0",
    ]  # fmt: skip
    last = first_slice[-1]
    assert last.image_id.endswith("m2p2c2j0")
    assert last.parameters == {
        "pet_ct_misregistration_shift": 10.0,
        "pet_count_reduction_fraction": 0.1,
        "ct_dose_reduction_fraction": 0.1,
        "jpeg_quality": 100.0,
    }
    assert [a.level for a in last.axes] == [2, 2, 2, 0]
    # the manifest reads back to the same text
    assert manifest_text(records) == (lowdose_dataset / "manifest.csv").read_text()
    for record in records:
        data = (lowdose_dataset / record.image).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record.sha256


def test_lowdose_neutral_cell_is_the_reference_and_the_others_its_renders(lowdose_dataset):
    """m0p0c0 (every PET/CT axis neutral) is the reference render as a q100 JPEG; every other
    cell is the JPEG of its own render after the PET/CT-domain axes."""
    records = read_manifest(lowdose_dataset / "manifest.csv")
    state = json.loads(
        (
            lowdose_dataset / ".build-state" / "patients" / f"{records[0].patient_id}.json"
        ).read_text()
    )
    renders = {key: rel for key, rel, _ in state["slices"][0]["renders"]}
    assert len(renders) == 26 and "m0p0c0" not in renders
    slice_id = state["slices"][0]["slice_id"]
    reference = np.asarray(Image.open(lowdose_dataset / f"references/{slice_id}.png"))
    by_code = {r.image_id.rsplit("_", 1)[1]: r for r in records if r.slice_id == slice_id}
    assert (lowdose_dataset / by_code["m0p0c0j0"].image).read_bytes() == encode_jpeg(
        reference, 100, "4:2:0"
    )
    for key, rel in renders.items():
        render = np.asarray(Image.open(lowdose_dataset / rel))
        image = (lowdose_dataset / by_code[f"{key}j0"].image).read_bytes()
        assert image == encode_jpeg(render, 100, "4:2:0")
        assert not np.array_equal(render, reference), key

    # lower dose or fewer counts: further from the reference (more noise)
    def change(key: str) -> float:
        render = np.asarray(Image.open(lowdose_dataset / renders[key])).astype(int)
        return float(np.abs(render - reference.astype(int)).mean())

    assert change("m0p0c2") > change("m0p0c1") > 0
    assert change("m0p2c0") > change("m0p1c0") > 0


def test_lowdose_build_is_reproducible_for_any_jobs_and_resumes(
    lowdose_dataset, small_phantom, lowdose_protocol, tmp_path
):
    other = tmp_path / "jobs2"
    result = _build(lowdose_protocol, small_phantom, other, jobs="2")
    assert result.exit_code == 0, result.output
    assert _files(other) == _files(lowdose_dataset)
    damaged = next((other / "renders").iterdir())
    damaged.write_bytes(b"not a png")
    image = next((other / "images").iterdir())
    image.unlink()
    result = _build(lowdose_protocol, small_phantom, other, jobs="1")
    assert result.exit_code == 0, result.output
    assert _files(other) == _files(lowdose_dataset)


def test_continuous_images_draw_their_own_recorded_parameters(continuous_dataset):
    records = read_manifest(continuous_dataset / "manifest.csv")
    assert len(records) == 108
    axes = load_dataset_protocol("pet-ct-iqa-ds-continuous").distortions.axes
    cells = [tuple(r.parameters.values()) for r in records]
    assert len(set(cells)) == 108  # no two images share a cell
    values = np.array(cells)
    assert values.min(axis=0).tolist() >= [0.0, 0.0, 40.0]
    assert values.max(axis=0).tolist() <= [0.010, 10.0, 100.0]
    assert np.all(values[:, 2] == np.round(values[:, 2]))  # whole JPEG qualities
    assert all(a.level is None for r in records for a in r.axes)  # no level columns
    # every image is the reference through impulse(lambda) -> gaussian(sigma) -> jpeg(q)
    for record in records[:27:5]:
        reference = np.asarray(Image.open(continuous_dataset / record.reference))
        lam, sigma, quality = cells[records.index(record)]
        rng = rng_for(record.seed, record.image_id)
        image = get_distortion(axes[0].distortion)(reference, lam, rng)
        image = get_distortion("gaussian")(image, sigma, rng)
        expected = get_distortion("jpeg")(image, quality, rng)
        assert (continuous_dataset / record.image).read_bytes() == expected


def test_continuous_sheet_is_three_rows_of_nine(continuous_dataset):
    sheet = next(p for p in (continuous_dataset / "sheets").iterdir() if p.suffix == ".png")
    classic_width = 9 * 128 + 10 * 4  # the layout of the classic 3 x 9 sheet
    assert Image.open(sheet).size == (classic_width, 22 + 3 * (128 + 16 + 4) + 4)
    decoded = decode_image(sheet.read_bytes())
    assert decoded.shape[2] == 3


def test_simulate_refuses_other_protocols_without_a_latent_model(lowdose_dataset, tmp_path):
    result = CliRunner().invoke(
        cli, ["collect-ratings", "simulate", "--dataset", str(lowdose_dataset), "--raters", "2"]
    )
    assert result.exit_code != 0
    assert "calibrated to the published PET-CT-IQA-DS MOS table" in result.output
    assert "--latent-model" in result.output
    assert not (lowdose_dataset / "ratings.sqlite").exists()
    model = tmp_path / "latent.json"
    model.write_text('{"intercept": 1, "coefficients": {"no_such_column": 2}}')
    result = CliRunner().invoke(
        cli,
        ["collect-ratings", "simulate", "--dataset", str(lowdose_dataset),
         "--latent-model", str(model)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "column 'no_such_column' is not in" in result.output


def test_simulate_with_a_latent_model_uses_the_parameters(small_phantom, small_protocol, tmp_path):
    """On a classic dataset the model replaces the MOS table: a steep model in the JPEG quality
    alone gives scores that follow the quality, not the published cells."""
    import sqlite3

    dataset = tmp_path / "ds"
    result = _build(small_protocol, small_phantom, dataset)
    assert result.exit_code == 0, result.output
    model = tmp_path / "latent.json"
    model.write_text('{"intercept": -2.0, "coefficients": {"jpeg_quality": 0.06}}')
    result = CliRunner().invoke(
        cli,
        ["collect-ratings", "simulate", "--dataset", str(dataset), "--raters", "3",
         "--latent-model", str(model)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with sqlite3.connect(dataset / "ratings.sqlite") as db:
        rows = db.execute("SELECT image, score FROM ratings").fetchall()
    quality = {r.image: r.jpeg_quality for r in read_manifest(dataset / "manifest.csv")}
    mean = {q: np.mean([s for i, s in rows if quality[i] == q]) for q in (100, 70, 40)}
    # latent 4.0 / 2.2 / 0.4 for q100 / q70 / q40
    assert mean[100] > 3.3 and 1.5 < mean[70] < 2.9 and mean[40] < 1.0


def test_evaluate_fits_a_parameter_regression_where_no_levels_exist(continuous_dataset, tmp_path):
    """A continuous design has no level table; evaluate reports a regression on the recorded
    parameters instead, fitted on the training patient."""
    import shutil

    import pandas as pd

    from petctiqa.iqa.data import load_iqa_dataset
    from petctiqa.iqa.evaluation import evaluate

    dataset = tmp_path / "ds"
    shutil.copytree(continuous_dataset, dataset)
    records = read_manifest(dataset / "manifest.csv")
    # a made-up MOS that falls with each parameter (not a claim about real raters)
    rows = [
        {
            "image": r.image,
            "patient_id": r.patient_id,
            "slice_id": r.slice_id,
            "mos": 4.0 - 150.0 * p["impulse_poisson_lambda"] - 0.12 * p["gaussian_sigma"]
            - 0.02 * (100.0 - p["jpeg_quality"]),
        }
        for r in records
        for p in [r.parameters]
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(dataset / "mos.csv", index=False)
    data = load_iqa_dataset(dataset)
    first = next(s for s in data.samples if s.image_id == records[0].image_id)
    assert dict(first.parameters) == records[0].parameters and first.levels is None
    result = evaluate(None, data, baselines=True, n_boot=0)
    names = [m.method for m in result.methods]
    assert "level table" not in names
    regression = next(m for m in result.methods if m.method.startswith("parameter regression"))
    assert regression.report.srocc.value > 0.95
