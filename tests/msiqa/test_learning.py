"""Model registry, native crops, the generator teacher, pretraining (determinism, resume) and
the pretrain -> train -> score path on real PET-CT-IQA-DS images (tiny settings)."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from petctiqa.errors import DatasetError, ModelError
from petctiqa.iqa.generator import (
    DistortionRanges,
    SampleSettings,
    apply_draw,
    dihedral,
    generator_sample,
)
from petctiqa.iqa.inference import predict_stacks
from petctiqa.iqa.preprocess import Preprocessing, grid_crops, grid_origins, random_crop
from petctiqa.models import build_model, get_model_entry, model_names, register_model
from petctiqa.protocol import load_dataset_protocol

DEV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pet-ct-iqa-ds-dev"


def _mini_release(folder: Path, slices: set[str]) -> Path:
    """A PET-CT-IQA-DS folder (label.txt, groups.csv, test/) with the 27 images of ``slices``."""
    (folder / "test").mkdir(parents=True)
    with open(DEV / "groups.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["slice"] in slices]
    for row in rows:
        shutil.copy(DEV / "test" / row["image"], folder / "test" / row["image"])
    (folder / "label.txt").write_text("".join(f"{r['image']},{r['mos']}\n" for r in rows))
    with open(folder / "groups.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def mini_sides(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mini")
    return _mini_release(root / "p1", {"s04"}), _mini_release(root / "p2", {"s08"})


# ------------------------------------------------------------------------------ registry


def test_registry_lists_both_models_and_refuses_unknown_or_duplicate_names():
    assert {"msiqa", "petct-cnn"} <= set(model_names())
    with pytest.raises(ModelError, match="registered models: .*petct-cnn"):
        get_model_entry("resnet-9000")
    with pytest.raises(ModelError, match="registered twice"):
        register_model(get_model_entry("petct-cnn"))


def test_petct_cnn_contract():
    model, config = build_model("petct-cnn")
    assert sum(p.numel() for p in model.parameters()) == 270_846
    x = torch.zeros(2, 3, 64, 64)
    parts = model.eval().forward_parts(x)
    assert parts["score"].shape == (2,) and torch.equal(parts["w"], torch.ones(2))
    assert model.features(x).shape == (2, model.feature_dim)
    assert model.distortions(x).shape == (2, 3)
    assert get_model_entry("petct-cnn").config_from_dict(config.to_dict()) == config


def test_response_table_interpolates_and_fits_a_known_surface_exactly():
    from petctiqa.models.petct_cnn import ResponseTable

    table = ResponseTable(axes=3, knots=3)
    grid = torch.tensor([[a, b, c] for a in (0, 0.5, 1) for b in (0, 0.5, 1) for c in (0, 0.5, 1)])
    surface = 4 - grid.sum(dim=1) + 0.5 * (grid[:, 0] * grid[:, 2])  # an interaction term
    table.fit(grid, surface, ridge=0.0)
    assert table(grid).detach() == pytest.approx(surface, abs=1e-5)
    between = torch.tensor([[0.25, 0.0, 0.0], [2.0, -1.0, 0.0]])  # midpoint; clamped corner
    assert table(between).detach() == pytest.approx([3.75, 3.0], abs=1e-5)


def test_models_command_prints_every_model():
    from petctiqa_cli.main import cli

    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    assert "msiqa  (MS-IQA)" in result.output and "58,698,598" in result.output
    assert "petct-cnn" in result.output and "270,846" in result.output


# -------------------------------------------------------------------------------- crops


def test_grid_crops_cover_the_image_on_the_16_pixel_grid():
    array = np.arange(3 * 512 * 512, dtype=np.float32).reshape(3, 512, 512)
    prep = Preprocessing(size=256, mode="crops", grid=2)
    crops = grid_crops(array, prep)
    assert crops.shape == (4, 3, 256, 256)
    np.testing.assert_array_equal(crops[3], array[:, 256:, 256:])
    assert grid_origins(512, 224, 3) == [0, 144, 288]
    assert grid_crops(array, Preprocessing(size=224)).shape == (1, 3, 512, 512)
    whole = Preprocessing(size=256, mode="crops", grid=0)
    assert grid_crops(array, whole).shape == (1, 3, 512, 512) and whole.crops_per_image == 1


def test_random_crop_is_aligned_and_seeded():
    array = np.random.default_rng(0).random((3, 300, 420), dtype=np.float32)
    prep = Preprocessing(size=128, mode="crops")
    a = random_crop(array, prep, np.random.default_rng(5))
    b = random_crop(array, prep, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    hits = [np.argwhere(array[0] == a[0, 0, 0])[0] for _ in range(1)]
    assert all(r % 16 == 0 and c % 16 == 0 for r, c in hits)


def test_preprocessing_dicts_from_before_crops_mean_resize():
    old = {"size": 224, "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3}
    prep = Preprocessing.from_dict(old)
    assert prep.mode == "resize" and prep.crops_per_image == 1
    with pytest.raises(DatasetError, match="multiple of 16"):
        Preprocessing(size=250, mode="crops")


def test_predict_stacks_averages_each_image_whatever_the_batch_size():
    torch.manual_seed(0)
    model, _ = build_model("petct-cnn")
    rng = np.random.default_rng(1)
    stacks = [rng.random((k, 3, 32, 32), dtype=np.float32) for k in (1, 4, 2, 3)]
    direct = [
        float(model.eval().forward_parts(torch.from_numpy(s))["score"].detach().mean())
        for s in stacks
    ]
    for batch in (1, 3, 7, 64):
        got = [r["score"] for r in predict_stacks(model, iter(stacks), torch.device("cpu"), batch)]
        assert got == pytest.approx(direct, abs=1e-5)


# ---------------------------------------------------------------------------- generator


def _ranges() -> DistortionRanges:
    return DistortionRanges.from_settings(load_dataset_protocol().distortions)


def test_generator_targets_put_the_strongest_published_level_at_one():
    ranges = _ranges()
    from petctiqa.iqa.generator import DistortionDraw

    assert ranges.targets(DistortionDraw(0.010, 10.0, 40)) == pytest.approx([1, 1, 1])
    assert ranges.targets(DistortionDraw(0.0, 0.0, 100)) == pytest.approx([0, 0, 0])
    assert ranges.targets(DistortionDraw(0.005, 5.0, 70)) == pytest.approx([0.5, 0.5, 0.5])
    draws = [ranges.draw(np.random.default_rng(i)) for i in range(400)]
    assert max(d.poisson for d in draws) <= 0.0125 and min(d.jpeg_quality for d in draws) >= 25
    assert 0.15 < np.mean([d.gaussian_sigma == 0 for d in draws]) < 0.35


def test_generator_samples_are_pure_functions_of_seed_and_index():
    rgb = np.random.default_rng(3).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    for settings in (SampleSettings(64), SampleSettings(64, augment=True)):
        a = generator_sample([rgb], _ranges(), settings, seed=11, index=7)
        b = generator_sample([rgb], _ranges(), settings, seed=11, index=7)
        c = generator_sample([rgb], _ranges(), settings, seed=11, index=8)
        assert a[0].shape == (64, 64, 3)
        np.testing.assert_array_equal(a[0], b[0])
        assert not np.array_equal(a[0], c[0]) or not np.array_equal(a[1], c[1])


def test_dihedral_gives_eight_distinct_turns_of_the_same_pixels():
    rgb = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    turns = [dihedral(rgb, k) for k in range(8)]
    assert len({t.tobytes() for t in turns}) == 8
    assert all(np.array_equal(np.sort(t, axis=None), np.sort(rgb, axis=None)) for t in turns)
    np.testing.assert_array_equal(turns[0], rgb)
    np.testing.assert_array_equal(turns[4], rgb[:, ::-1])


def test_generator_pairs_share_the_clean_crop_and_differ_in_distortion():
    from petctiqa.iqa.generator import DistortionRanges, generator_pair

    rgb = np.random.default_rng(5).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    # No noise axis and JPEG fixed at 100: both members must then be the same crop's pixels.
    clean = DistortionRanges("impulse", 0.01, 0.0, 10.0, 100, 40, "4:2:0", none_probability=1.0)
    first, t1, second, t2 = generator_pair([rgb], clean, SampleSettings(64, True), 2, 3)
    np.testing.assert_array_equal(first, second)
    assert t1.tolist() == t2.tolist() == [0.0, 0.0, 0.0]
    first, t1, second, t2 = generator_pair([rgb], _ranges(), SampleSettings(64, True), 2, 3)
    assert not np.array_equal(t1, t2)
    again = generator_pair([rgb], _ranges(), SampleSettings(64, True), 2, 3)
    np.testing.assert_array_equal(again[0], first)


def test_ranking_loss_is_zero_only_when_pairs_are_ordered_by_the_margin():
    from petctiqa.iqa.pretrain import RANKING_MARGIN, pretrain_loss

    target = torch.tensor([[0.8, 0.0, 0.5], [0.2, 0.0, 0.5]])
    ordered = torch.tensor([[0.8, 0.0, 0.5], [0.2, 0.0, 0.5]])
    swapped = torch.tensor([[0.2, 0.0, 0.5], [0.8, 0.0, 0.5]])
    assert float(pretrain_loss(ordered, target, "parameters+ranking")) == 0.0
    mse = float(pretrain_loss(swapped, target, "parameters"))
    ranked = float(pretrain_loss(swapped, target, "parameters+ranking"))
    # Only axis 0 differs in truth: hinge = margin + 0.6 on that one ranked pair.
    assert ranked - mse == pytest.approx(RANKING_MARGIN + 0.6)


def test_impulse_brightening_of_generated_images_follows_lambda():
    """Each impulse lifts one channel value from 128 to 255; JPEG keeps the mean, so the mean
    rise is 127 * (1 - exp(-lambda * 128 / 255)) per channel value (0.254 and 0.508 here)."""
    from petctiqa.iqa.generator import DistortionDraw

    clean = np.full((256, 256, 3), 128, dtype=np.uint8)
    rises = []
    for lam in (0.004, 0.008):
        out = apply_draw(clean, DistortionDraw(lam, 0.0, 100), _ranges(), np.random.default_rng(0))
        rises.append(float(out.mean()) - 128.0)
    expected = [127 * (1 - math.exp(-lam * 128 / 255)) for lam in (0.004, 0.008)]
    assert rises == pytest.approx(expected, rel=0.15)


# ---------------------------------------------------------------------------- pretrain


def _tiny_pretrain(out: Path, steps: int = 3, **kw):
    from petctiqa.iqa.pretrain import PretrainOptions, pretrain
    from petctiqa.iqa.references import Reference

    rng = np.random.default_rng(0)
    refs = [Reference(f"r{i}", rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for i in range(2)]
    prep = Preprocessing(size=32, mode="crops")
    options = PretrainOptions(steps=steps, batch_size=4, device="cpu", progress=False, **kw)
    return pretrain("petct-cnn", refs, _ranges(), prep, out, options)


def test_pretraining_is_deterministic_and_resumes_to_the_same_weights(tmp_path, monkeypatch):
    first = torch.load(_tiny_pretrain(tmp_path / "a", 4).output, weights_only=True)
    second = torch.load(_tiny_pretrain(tmp_path / "b", 4).output, weights_only=True)
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key
    # Interrupt after step 3 (state saved at step 2), then rerun: same weights as uninterrupted.
    import petctiqa.iqa.pretrain as module

    real = module._batch
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "_batch", failing)
    with pytest.raises(KeyboardInterrupt):
        _tiny_pretrain(tmp_path / "c", 4, save_every=2)
    assert (tmp_path / "c" / module.STATE_NAME).is_file()
    monkeypatch.setattr(module, "_batch", real)
    resumed = torch.load(_tiny_pretrain(tmp_path / "c", 4, save_every=2).output, weights_only=True)
    for key, value in first["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert not (tmp_path / "c" / module.STATE_NAME).exists()


def test_ranking_pretraining_with_augmentation_is_deterministic(tmp_path):
    kw = {"augment": True, "target": "parameters+ranking"}
    first = torch.load(_tiny_pretrain(tmp_path / "a", 2, **kw).output, weights_only=True)
    second = torch.load(_tiny_pretrain(tmp_path / "b", 2, **kw).output, weights_only=True)
    plain = torch.load(_tiny_pretrain(tmp_path / "c", 2).output, weights_only=True)
    assert first["options"]["target"] == "parameters+ranking" and first["options"]["augment"]
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key
    assert any(not torch.equal(v, plain["model"][k]) for k, v in first["model"].items())


def test_init_refuses_weights_of_another_model(tmp_path):
    from petctiqa.iqa.pretrain import load_pretrained_into

    result = _tiny_pretrain(tmp_path, 1)
    model, config = build_model("msiqa", {"use_swin": False, "image_size": 64})
    with pytest.raises(ModelError, match="pretrained for model 'petct-cnn', not 'msiqa'"):
        load_pretrained_into(model, "msiqa", config, result.output)


# ------------------------------------------------------------------- end to end (tiny)


@pytest.mark.slow
def test_preset_cpu_pretrain_train_score_and_evaluate_agree(mini_sides, tmp_path):
    from petctiqa_cli.main import cli

    train_side, test_side = mini_sides
    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["train", "--data", str(train_side), "--test-data", str(test_side), "--out", str(run),
         "--preset", "cpu", "--epochs", "2", "--pretrain-steps", "2", "--crop", "64",
         "--crop-grid", "0", "--batch-size", "8", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (run / "pretrain" / "pretrained.pt").is_file()
    assert "level-table baseline" in result.output
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    last = float(rows[-1]["test_srocc"])
    assert len(rows) == 2 and not math.isnan(last)
    payload = torch.load(run / "last.pt", weights_only=True)
    assert payload["model_name"] == "petct-cnn" and payload["format_version"] == 2
    assert payload["preprocessing"]["mode"] == "crops"
    assert payload["train_options"]["init"]["path"].endswith("pretrained.pt")
    # evaluate --test-data on last.pt reproduces the last epoch's figure
    table = tmp_path / "m.csv"
    result = runner.invoke(
        cli,
        ["evaluate", "--checkpoint", str(run / "last.pt"), "--test-data", str(test_side),
         "--device", "cpu", "--bootstrap", "10", "--out", str(table), "--baselines"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = {r["method"]: r for r in csv.DictReader(table.read_text().splitlines())}
    assert float(figures["petct-cnn"]["srocc"]) == pytest.approx(last, abs=1e-9)
    assert "level table" in figures and "hand-made features (GBR fit on train)" in figures
    # score: one image gives one finite score on the 0..4 scale; an unreadable file gets a row
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    image = next((test_side / "test").glob("*.jpg"))
    out = tmp_path / "scores.csv"
    result = runner.invoke(
        cli,
        ["score", str(image), str(bad), "--checkpoint", str(run / "best.pt"), "--out", str(out)],
    )
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [Path(r["source"]).name for r in rows] == [image.name, "bad.png"]
    assert math.isfinite(float(rows[0]["score"])) and rows[1]["error"]
    assert rows[0]["scale"] == "0..4"


def test_unrated_build_folder_says_how_to_get_ratings(tmp_path):
    from petctiqa.iqa.data import load_iqa_dataset
    from petctiqa_cli.main import cli

    (tmp_path / "manifest.csv").write_text("image\n")
    with pytest.raises(
        DatasetError, match="collect-ratings export.*collect-ratings simulate"
    ) as info:
        load_iqa_dataset(tmp_path)
    assert info.value.setting == "allow_simulated"
    result = CliRunner().invoke(
        cli, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert result.stderr.endswith("then needs allow_simulated) (option --allow-simulated)\n")


def test_device_and_resume_errors_name_the_setting(tiny_csv, tmp_path):
    from petctiqa.iqa.data import load_iqa_dataset
    from petctiqa.iqa.device import resolve_device
    from petctiqa.iqa.train import TrainOptions, train

    with pytest.raises(ModelError, match="^device 'tpu': use auto, cpu or cuda$") as info:
        resolve_device("tpu")
    assert info.value.setting == "device"
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="^device 'cuda': no CUDA device is available") as info:
            resolve_device("cuda")
        assert info.value.setting == "device"
    options = TrainOptions(device="cpu", resume=True, progress=False)
    with pytest.raises(ModelError, match="last.pt not found: nothing to resume from") as info:
        train(load_iqa_dataset(tiny_csv), tmp_path / "run", options)
    assert info.value.setting == "resume"


def test_version_1_checkpoints_still_load_as_msiqa(tmp_path, small_config):
    """Checkpoints written before the registry (no model_name, format_version 1) load."""
    from petctiqa.iqa.checkpoint import load_model
    from petctiqa.msiqa.model import MsIqa

    model = MsIqa(small_config)
    payload = {
        "format": "petctiqa-msiqa",
        "format_version": 1,
        "architecture": "MS-IQA",
        "config": small_config.to_dict(),
        "label_scale": {"low": 0.0, "high": 4.0},
        "model": model.state_dict(),
    }
    torch.save(payload, tmp_path / "v1.pt")
    loaded = load_model(tmp_path / "v1.pt")
    assert isinstance(loaded.model, MsIqa) and loaded.preprocessing == Preprocessing(size=64)


def test_msiqa_pretrains_through_a_probe_and_trains_from_it(tmp_path, small_config, tiny_csv):
    """The GPU path: MS-IQA's trunks learn from generator labels through a linear probe; the
    probe is not part of the model, and train --init starts from the pretrained weights."""
    from petctiqa.iqa.data import load_iqa_dataset
    from petctiqa.iqa.pretrain import PretrainOptions, pretrain
    from petctiqa.iqa.references import Reference
    from petctiqa.iqa.train import TrainOptions, train

    rng = np.random.default_rng(0)
    refs = [Reference("r", rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))]
    prep = Preprocessing(size=64, mode="crops", grid=1)
    options = PretrainOptions(steps=2, batch_size=4, device="cpu", progress=False)
    result = pretrain("msiqa", refs, _ranges(), prep, tmp_path / "pre", options, small_config)
    data = torch.load(result.output, weights_only=True)
    model, _ = build_model("msiqa", small_config)
    assert data["probe"]["weight"].shape == (3, model.feature_dim)
    assert not any(key.startswith("probe") for key in data["model"])
    run = train(
        load_iqa_dataset(tiny_csv),
        tmp_path / "run",
        TrainOptions(epochs=1, batch_size=4, device="cpu", model=small_config, progress=False,
                     init=result.output, preprocessing=prep),
    )  # fmt: skip
    assert len(run.history) == 1
    saved = torch.load(run.last_checkpoint, weights_only=True)
    assert saved["train_options"]["init"]["path"] == str(result.output)


def test_handcrafted_features_see_impulses_and_blocking_on_published_images():
    """On the published images of one slice: impulse density rises with the Poisson level and
    8x8 blockiness with the JPEG level (all else at level 0)."""
    import cv2

    from petctiqa.iqa.handcrafted import FEATURE_NAMES, image_features

    with open(DEV / "groups.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["slice"] == "s04"]

    def features(p: str, g: str, j: str) -> dict[str, float]:
        (row,) = [
            r
            for r in rows
            if (r["poisson_level"], r["gaussian_level"], r["jpeg_level"]) == (p, g, j)
        ]
        rgb = cv2.cvtColor(cv2.imread(str(DEV / "test" / row["image"])), cv2.COLOR_BGR2RGB)
        return dict(zip(FEATURE_NAMES, image_features(rgb), strict=True))

    impulses = [features(p, "0", "0")["impulses_40"] for p in "012"]
    blocking = [features("0", "0", j)["blockiness_h"] for j in "012"]
    assert impulses[0] < 1 < impulses[1] < impulses[2]
    assert blocking[0] < blocking[1] < blocking[2]


def test_references_come_from_the_training_patients_only(tmp_path):
    """PET-CT-IQA-DS folder: the (0,0,0) images of the chosen patients' slices; a fresh build
    folder (no mos.csv yet): its references/ renders."""
    from PIL import Image

    from petctiqa.iqa.references import collect_references

    p1 = collect_references([DEV], ["P1"])
    assert len(p1) == 5 and all(r.rgb.shape == (512, 512, 3) for r in p1)
    with open(DEV / "groups.csv", newline="") as handle:
        clean = {
            r["image"]
            for r in csv.DictReader(handle)
            if r["patient"] == "P1"
            and (r["poisson_level"], r["gaussian_level"], r["jpeg_level"]) == ("0", "0", "0")
        }
    assert {Path(r.key).name for r in p1} == clean
    build = tmp_path / "ds"
    (build / "references").mkdir(parents=True)
    for name in ("b.png", "a.png"):
        Image.new("RGB", (32, 32), (9, 9, 9)).save(build / "references" / name)
    assert [Path(r.key).name for r in collect_references([build])] == ["a.png", "b.png"]
    with pytest.raises(DatasetError, match="no such file"):
        collect_references([tmp_path / "missing"])
