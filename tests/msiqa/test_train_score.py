from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from petctiqa.errors import ModelError
from petctiqa.iqa.checkpoint import load_model, read_checkpoint
from petctiqa.iqa.loss import msiqa_loss
from petctiqa.iqa.score import Scorer
from petctiqa.msiqa.model import MsIqa
from petctiqa_cli.main import cli


def test_one_adam_step_lowers_the_loss_on_a_fixed_batch(small_config):
    torch.manual_seed(0)
    model = MsIqa(small_config).train()
    model.score_branch[2].p = model.weight_branch[2].p = 0.0  # no dropout noise
    x = torch.randn(4, 3, 64, 64)
    y = torch.tensor([0.0, 0.3, 0.7, 1.0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    before = msiqa_loss(model(x), y)
    opt.zero_grad()
    before.backward()
    opt.step()
    after = msiqa_loss(model(x), y)
    assert after.item() < before.item()


@pytest.mark.slow
def test_training_writes_outputs_and_checkpoint_round_trip(trained_run, tiny_csv, tmp_path):
    out = trained_run.out_dir
    for name in (
        "last.pt",
        "best.pt",
        "metrics.csv",
        "curves.png",
        "scatter.png",
        "predictions.csv",
    ):
        assert (out / name).is_file(), name
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["epoch"]) == [1] and np.isfinite(metrics["train_loss"][0])
    assert list(metrics["best"]) == [1] and list(metrics["simulated"]) == [False]
    assert trained_run.last_epoch == trained_run.best_epoch == 1
    assert trained_run.last_srocc == metrics["test_srocc"][0] == trained_run.best_srocc
    assert trained_run.last_plcc == metrics["test_plcc"][0]
    data = read_checkpoint(out / "best.pt")
    assert data["format"] == "petctiqa-msiqa" and data["label_scale"] == {"low": 1.0, "high": 4.0}
    assert sorted(data["train_groups"] + data["test_groups"]) == ["P0", "P1", "P2", "P3"]
    images = sorted(tiny_csv.parent.glob("img0*.png"))
    first = Scorer(out / "best.pt", "cpu").score(images, batch_size=3)
    again = Scorer(out / "best.pt", "cpu").score(images, batch_size=5)
    assert [r.score for r in first] == pytest.approx([r.score for r in again], abs=1e-6)
    loaded = load_model(out / "best.pt")
    raw = first[0].s * first[0].w
    assert first[0].score == pytest.approx(loaded.label_scale.denormalise(raw), abs=1e-6)


@pytest.mark.slow
def test_checkpoints_reproduce_the_trained_model_exactly(trained_run):
    """The in-memory model after training and the model rebuilt from last.pt/best.pt (1 epoch:
    the same weights) give bit-identical outputs in eval mode."""
    trained = trained_run.model.eval()
    torch.manual_seed(5)
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        expected = trained.forward_parts(x)
    for path in (trained_run.last_checkpoint, trained_run.best_checkpoint):
        loaded = load_model(path).model
        assert not loaded.training
        with torch.no_grad():
            parts = loaded.forward_parts(x)
        for key in ("score", "s", "w"):
            assert torch.equal(parts[key], expected[key]), (path.name, key)
        own = trained.state_dict()
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, own[key]), key
    # and a different model would not pass the check
    torch.manual_seed(6)
    with torch.no_grad():
        other = type(trained)(trained.config).eval().forward_parts(x)
    assert not torch.equal(other["score"], expected["score"])


@pytest.mark.slow
def test_weight_file_implies_pretrained_for_its_trunk(tiny_csv, tmp_path):
    """--resnet-weights without --pretrained loads that file (no network, no cache)."""
    from petctiqa.msiqa.model import MsIqa, MsIqaConfig

    torch.manual_seed(123)
    fake = MsIqa(MsIqaConfig(use_swin=False, image_size=64)).resnet.state_dict()
    fake = {
        k: torch.randn_like(v) if k.endswith(("weight", "bias")) else v for k, v in fake.items()
    }
    torch.save({"state_dict": fake}, tmp_path / "r50.pth")
    runner = CliRunner()
    args = ["train", "--data", str(tiny_csv), "--no-swin", "--image-size", "64", "--epochs", "1"]
    args += ["--batch-size", "4", "--device", "cpu", "--lr", "0"]  # lr 0: weights unchanged
    result = runner.invoke(
        cli, [*args, "--out", str(tmp_path / "run"), "--resnet-weights", str(tmp_path / "r50.pth")]
    )
    assert result.exit_code == 0, result.output
    data = read_checkpoint(tmp_path / "run" / "last.pt")
    assert data["train_options"]["pretrained"] is True
    assert data["train_options"]["pretrained_weights"] == {"resnet50": str(tmp_path / "r50.pth")}
    conv = data["model"]["resnet.conv1.weight"]
    assert torch.equal(conv, fake["conv1.weight"])
    assert torch.equal(data["model"]["resnet.layer4.2.conv3.weight"], fake["layer4.2.conv3.weight"])
    # without the file the trunk is random (seeded), not the file's
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "plain")])
    assert result.exit_code == 0, result.output
    plain = read_checkpoint(tmp_path / "plain" / "last.pt")
    assert plain["train_options"]["pretrained_weights"] == {}
    assert not torch.equal(plain["model"]["resnet.conv1.weight"], fake["conv1.weight"])
    # a weight file for a trunk the model does not have is an error, not ignored
    result = runner.invoke(
        cli, [*args, "--out", str(tmp_path / "x"), "--swin-weights", str(tmp_path / "r50.pth")]
    )
    assert result.exit_code == 2
    assert (
        "--swin-weights" in result.stderr
        and "no swin_tiny_patch4_window7_224 trunk" in result.stderr
    )


@pytest.mark.slow
def test_score_cli_outputs_and_errors(trained_run, tiny_csv, tmp_path):
    runner = CliRunner()
    ckpt = str(trained_run.out_dir / "best.pt")
    out_json = tmp_path / "s.json"
    result = runner.invoke(
        cli,
        [
            "score",
            str(tiny_csv.parent),
            "--checkpoint",
            ckpt,
            "--out",
            str(out_json),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(out_json.read_text())
    assert len(scores) == 12 and {"source", "score", "s", "w"} <= set(scores[0])
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    result = runner.invoke(cli, ["score", str(bad), "--checkpoint", ckpt])
    # An unreadable input is reported and the run ends non-zero, but it no longer stops the
    # other inputs (issue #18.12): exit 1 after scoring the rest, not 2 before any.
    assert result.exit_code == 1 and f"error: {bad}: cannot read image" in result.output
    foreign = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    result = runner.invoke(cli, ["score", str(bad), "--checkpoint", str(foreign)])
    assert result.exit_code == 2 and "not a petctiqa MS-IQA checkpoint" in result.output
    with pytest.raises(ModelError, match="architecture"):
        data = read_checkpoint(trained_run.out_dir / "best.pt")
        data["architecture"] = "HyperIQA"
        torch.save(data, tmp_path / "arch.pt")
        read_checkpoint(tmp_path / "arch.pt")


@pytest.mark.slow
def test_evaluate_cli_with_baselines_on_real_images(trained_run, shared_data, tmp_path):
    # 2 slices (54 images) of the real sample, one per patient: P1 trains the baselines.
    groups = pd.read_csv(shared_data / "pet-ct-iqa-ds-dev" / "groups.csv")
    keep = groups[groups["slice"].isin(["s04", "s10"])].copy()
    keep["path"] = [str(shared_data / "pet-ct-iqa-ds-dev" / "test" / n) for n in keep["image"]]
    keep["group"] = keep["patient"]
    keep["split"] = np.where(keep["patient"] == "P1", "train", "test")
    csv_path = tmp_path / "subset.csv"
    keep[["path", "mos", "group", "split", "poisson_level", "gaussian_level", "jpeg_level"]].to_csv(
        csv_path, index=False
    )
    assert sorted(keep.groupby("patient").size()) == [27, 27]
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--data",
            str(csv_path),
            "--baselines",
            "--bootstrap",
            "50",
            "--out",
            str(tmp_path / "t.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table["method"])[:2] == ["level table", "BRISQUE (SVR fit on train)"]
    assert table.loc[0, "n"] == 27
    assert table.loc[0, "srocc"] > 0.8
