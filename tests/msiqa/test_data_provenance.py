"""Where the training data comes from and how the checkpoint remembers it: partly rated and
simulated collect-ratings exports, data without patient IDs, the stored preprocessing and the
stored render protocol (used and checked when scoring DICOM studies)."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from petctiqa.errors import DatasetError
from petctiqa.iqa.checkpoint import read_checkpoint
from petctiqa.iqa.data import DataWarning, load_iqa_dataset
from petctiqa.iqa.preprocess import Preprocessing, load_input
from petctiqa.iqa.score import RenderProtocolWarning, Scorer
from petctiqa_cli.main import cli

FAST = ["--no-swin", "--image-size", "64", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]


def _copy_dataset(src, dst):
    shutil.copytree(src / "images", dst / "images")
    for name in ("dataset.json", "split.csv", "manifest.csv"):
        shutil.copy(src / name, dst / name)
    return dst


def _write_export(frame: pd.DataFrame, path, banner: str) -> None:
    path.write_text(banner + frame.to_csv(index=False))


# ------------------------------------------------------------------------ partly rated (n = 0)


def test_partly_rated_export_skips_unrated_rows_and_counts_them(rated_build, tmp_path):
    banner = (rated_build / "mos.csv").read_text().splitlines()[0] + "\n"
    frame = pd.read_csv(rated_build / "mos.csv", comment="#")
    assert len(frame) == 54 and (frame["n"] == 3).all()
    unrated = [0, 7, 20, 33, 50]
    # What collect-ratings export writes for an image nobody rated: n = 0, empty statistics.
    for column in ("mos", "std", "ci95_low", "ci95_high", "bt500_mos"):
        frame.loc[unrated, column] = np.nan
    frame.loc[unrated, "n"] = 0
    root = _copy_dataset(rated_build, tmp_path / "partial")
    _write_export(frame, root / "mos.csv", banner)
    assert ",,0," in (root / "mos.csv").read_text()  # empty mos cells, n = 0

    with pytest.warns(DataWarning, match=r"mos.csv: skipped 5 unrated image\(s\).*49 rated"):
        ds = load_iqa_dataset(root)
    assert len(ds.samples) == 49 and ds.skipped_unrated == 5
    kept = {s.image.name for s in ds.samples}
    assert not kept & {frame.loc[i, "image"].split("/")[-1] for i in unrated}
    first_rated = ds.samples[0]
    assert first_rated.mos == pytest.approx(frame.loc[1, "mos"])

    # An empty MOS that claims ratings is still an error, and so is a MOS from n = 0 ratings.
    broken = frame.copy()
    broken.loc[3, "mos"] = np.nan
    _write_export(broken, root / "mos.csv", banner)
    with pytest.raises(DatasetError, match=r"mos.csv:5: mos nan is not finite"):
        load_iqa_dataset(root)
    broken = frame.copy()
    broken.loc[0, "mos"] = 2.0
    _write_export(broken, root / "mos.csv", banner)
    with pytest.raises(DatasetError, match=r"mos.csv:2: mos 2.0 given for an image with n = 0"):
        load_iqa_dataset(root)


# ---------------------------------------------------------------------------- simulated ratings


def test_simulated_flag_from_banner_or_column(rated_build, tmp_path):
    assert load_iqa_dataset(rated_build).simulated
    frame = pd.read_csv(rated_build / "mos.csv", comment="#")
    root = _copy_dataset(rated_build, tmp_path / "real")
    _write_export(frame.assign(simulated=False), root / "mos.csv", "")
    assert not load_iqa_dataset(root).simulated
    # the banner alone, or the column alone, is enough
    _write_export(frame.assign(simulated=False), root / "mos.csv", "# SIMULATED ratings: x\n")
    assert load_iqa_dataset(root).simulated
    _write_export(frame, root / "mos.csv", "")
    assert load_iqa_dataset(root).simulated


@pytest.fixture(scope="module")
def simulated_run(rated_build, tmp_path_factory):
    """`petctiqa train` on the simulated export, refused and then allowed."""
    out = tmp_path_factory.mktemp("simrun")
    runner = CliRunner()
    refused = runner.invoke(cli, ["train", "--data", str(rated_build), "--out", str(out), *FAST])
    allowed = runner.invoke(
        cli,
        ["train", "--data", str(rated_build), "--out", str(out), *FAST, "--allow-simulated"],
    )
    return refused, allowed, out


@pytest.mark.slow
def test_train_refuses_simulated_ratings_unless_allowed(simulated_run, custom_protocol):
    refused, allowed, out = simulated_run
    assert refused.exit_code == 2
    assert "ratings are SIMULATED" in refused.stderr and "--allow-simulated" in refused.stderr
    assert "Set allow_simulated for a pilot" in refused.stderr
    assert refused.stderr.endswith("marked simulated) (option --allow-simulated)\n")

    assert allowed.exit_code == 0, allowed.output
    assert "warning: " in allowed.stderr and "training on SIMULATED ratings" in allowed.stderr
    assert "outputs are marked simulated (option --allow-simulated)\n" in allowed.stderr
    assert "[SIMULATED ratings]" in allowed.stdout
    for name in ("last.pt", "best.pt"):
        data = read_checkpoint(out / name)
        assert data["simulated"] is True and data["train_options"]["simulated"] is True
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["simulated"]) == [True]
    assert list(metrics["best"]) == [1]


@pytest.mark.slow
def test_checkpoint_stores_preprocessing_and_render_protocol(simulated_run, custom_protocol):
    from dataclasses import asdict

    from petctiqa.protocol import load_dataset_protocol

    _, allowed, out = simulated_run
    assert allowed.exit_code == 0, allowed.output
    data = read_checkpoint(out / "best.pt")
    assert data["preprocessing"] == {
        "size": 64,
        "interpolation": "bicubic",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
    }
    stored = data["render_protocol"]
    assert stored["name"] == "custom-w400"
    assert stored["render"] == asdict(load_dataset_protocol(custom_protocol).render)
    assert stored["render"]["ct_window_width"] == 400.0 and stored["render"]["size"] == 128


@pytest.mark.slow
def test_dicom_scoring_uses_the_stored_render_protocol_and_warns_on_another(
    simulated_run, custom_protocol, phantom_dicom, tmp_path
):
    from petctiqa.dicom.index import index_dicom_tree
    from petctiqa.dicom.pairing import find_pet_ct_pairs
    from petctiqa.dicom.suv import load_pet_suv
    from petctiqa.dicom.volume import load_volume
    from petctiqa.protocol import load_dataset_protocol
    from petctiqa.render import render_slice

    _, allowed, out = simulated_run
    assert allowed.exit_code == 0, allowed.output
    study = next(p for p in phantom_dicom.rglob("PHANTOM-0001") if p.is_dir())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenderProtocolWarning)
        scorer = Scorer(out / "best.pt", "cpu")
        stored = scorer.score([study], batch_size=4, slice_stride=6)
    assert scorer.render_name == "custom-w400"
    assert scorer.render_settings == load_dataset_protocol(custom_protocol).render
    assert len(stored) >= 2

    # Independent path: the same slices rendered with the custom protocol, saved as PNG.
    (pair,) = find_pet_ct_pairs(index_dicom_tree(study))
    ct, pet = load_volume(pair.ct), load_pet_suv(pair.pet)
    low, high = pair.overlap_mm
    positions = ct.slice_positions_mm
    inside = np.flatnonzero((positions >= low - 1e-3) & (positions <= high + 1e-3))[::6]
    custom = load_dataset_protocol(custom_protocol).render
    pngs = []
    for k in inside:
        rgb = render_slice(ct, pet, int(k), custom)
        assert rgb.shape == (128, 128, 3)
        pngs.append(tmp_path / f"s{int(k)}.png")
        Image.fromarray(rgb).save(pngs[-1])
    from_png = scorer.score(pngs, batch_size=4)
    assert [r.score for r in stored] == pytest.approx([r.score for r in from_png], abs=1e-5)

    # Another protocol: used, and a warning names what differs.
    with pytest.warns(RenderProtocolWarning) as caught:
        other = Scorer(out / "best.pt", "cpu", protocol="pet-ct-iqa-ds")
        shipped = other.score([study], batch_size=4, slice_stride=6)
    message = str(caught[0].message)
    assert "protocol 'pet-ct-iqa-ds'" in message and "'custom-w400'" in message
    assert "ct_window_width: checkpoint 400.0, now 350.0" in message
    assert "size: checkpoint 128, now 512" in message
    assert len(shipped) == len(stored)
    assert max(abs(a.score - b.score) for a, b in zip(shipped, stored, strict=True)) > 1e-6
    # image files are not rendered: no warning for them
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenderProtocolWarning)
        other.score(pngs[:1])

    result = CliRunner().invoke(
        cli,
        [
            "score", str(study), "--checkpoint", str(out / "best.pt"), "--device", "cpu",
            "--slice-stride", "6", "--protocol", "pet-ct-iqa-ds",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning: DICOM studies are rendered with protocol 'pet-ct-iqa-ds'" in result.stderr
    assert "(option --protocol)" in result.stderr
    assert len(result.stdout.strip().splitlines()) == len(stored)


@pytest.mark.slow
def test_score_uses_stored_preprocessing_and_old_checkpoints_load(trained_run, tiny_csv, tmp_path):
    best = read_checkpoint(trained_run.best_checkpoint)
    images = sorted(tiny_csv.parent.glob("img0*.png"))[:4]
    reference = [r.score for r in Scorer(trained_run.best_checkpoint, "cpu").score(images)]

    # A checkpoint from before preprocessing/render_protocol were stored: same defaults.
    old = {k: v for k, v in best.items() if k not in ("preprocessing", "render_protocol")}
    torch.save(old, tmp_path / "old.pt")
    scorer = Scorer(tmp_path / "old.pt", "cpu")
    assert scorer.preprocessing == Preprocessing(size=64)
    assert scorer.render_name == "pet-ct-iqa-ds"
    assert [r.score for r in scorer.score(images)] == reference

    # Stored preprocessing is what scoring applies (here 48 px images, bilinear, other mean/std).
    prep = Preprocessing(size=64, interpolation="bilinear", mean=(0.4, 0.5, 0.6), std=(0.2,) * 3)
    torch.save({**best, "preprocessing": prep.to_dict()}, tmp_path / "bilinear.pt")
    small = []
    for i, path in enumerate(images):
        small.append(tmp_path / f"small{i}.png")
        Image.open(path).resize((48, 48)).save(small[-1])
    scores = [r.score for r in Scorer(tmp_path / "bilinear.pt", "cpu").score(small)]
    model = trained_run.model.eval()
    x = torch.from_numpy(np.stack([load_input(p, preprocessing=prep) for p in small]))
    with torch.no_grad():
        expected = best["label_scale"]["low"] + model(x).double().numpy() * (
            best["label_scale"]["high"] - best["label_scale"]["low"]
        )
    assert scores == pytest.approx(list(expected), abs=1e-9)
    # (1 epoch from random init: the model is nearly flat, but the inputs are told apart)
    default = [r.score for r in Scorer(trained_run.best_checkpoint, "cpu").score(small)]
    assert max(abs(a - b) for a, b in zip(scores, default, strict=True)) > 1e-6

    bad = {**best, "preprocessing": {**prep.to_dict(), "size": 96}}
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(Exception, match="preprocessing size 96 does not match"):
        Scorer(tmp_path / "bad.pt", "cpu")


def test_preprocessing_values_and_contiguous_input(tiny_csv):
    x = load_input(tiny_csv.parent / "img00.png", 64)
    assert x.flags["C_CONTIGUOUS"] and x.shape == (3, 64, 64)
    # a transposed (HWC-strided) array would reach torch as channels_last and make DDP warn
    assert torch.from_numpy(x[None]).is_contiguous()
    pixels = np.asarray(Image.open(tiny_csv.parent / "img00.png").convert("RGB"), np.float32)
    assert x[1, 5, 7] == pytest.approx((pixels[5, 7, 1] / 255 - 0.5) / 0.5, abs=1e-6)
    prep = Preprocessing(size=64, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    y = load_input(tiny_csv.parent / "img00.png", preprocessing=prep)
    assert y[2, 5, 7] == pytest.approx((pixels[5, 7, 2] / 255 - 0.406) / 0.225, abs=1e-5)
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    with pytest.raises(DatasetError, match="interpolation 'cubic'"):
        Preprocessing(interpolation="cubic")


# ------------------------------------------------------------------------------- patient groups


def _release(root, with_groups: bool):
    root.mkdir()
    lines = ["name,mos"]
    for i in range(4):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(root / f"{i:03d}.jpg")
        lines.append(f"{i:03d}.jpg,{i}")
    (root / "label.txt").write_text("\n".join(lines) + "\n")
    if with_groups:
        rows = ["image,patient"] + [f"{i:03d}.jpg,P{i // 2}" for i in range(4)]
        (root / "groups.csv").write_text("\n".join(rows) + "\n")
    return root


def test_data_without_patient_ids_warns_that_the_split_is_per_image(tmp_path, tiny_csv):
    with pytest.warns(DataWarning, match="each image is its own group.*per IMAGE, not by patient"):
        ds = load_iqa_dataset(_release(tmp_path / "nogroups", with_groups=False))
    assert not ds.grouped and ds.groups == ["000.jpg", "001.jpg", "002.jpg", "003.jpg"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        ds = load_iqa_dataset(_release(tmp_path / "groups", with_groups=True))
        assert ds.grouped and ds.groups == ["P0", "P1"]
        assert load_iqa_dataset(tiny_csv).grouped
    flat = tmp_path / "flat.csv"
    flat.write_text(
        "path,mos\n" + "".join(f"{tiny_csv.parent}/img0{i}.png,{i}\n" for i in range(3))
    )
    with pytest.warns(DataWarning, match="no group, patient_id or patient column"):
        assert not load_iqa_dataset(flat).grouped
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(tmp_path / "nogroups")])
    assert result.exit_code == 2  # no --checkpoint or --baselines, after loading the data
    assert "warning: " in result.stderr and "per IMAGE, not by patient" in result.stderr
