from __future__ import annotations

import pytest
import torch

from petctiqa.errors import ModelError
from petctiqa.msiqa.model import MsIqa
from petctiqa.msiqa.weights import load_pretrained_trunks, resolve_weights


def test_missing_weights_message_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelError) as info:
        resolve_weights("resnet50", None)
    message = str(info.value)
    assert str(tmp_path / "hf" / "hub" / "models--timm--resnet50.tv_in1k" / "snapshots") in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "never downloads" in message
    # The library states the facts; the command line names its option (below).
    assert "-weights" not in message and info.value.trunk == "resnet50"


def test_train_cli_names_the_weights_option(tmp_path, monkeypatch, tiny_csv):
    from click.testing import CliRunner

    from petctiqa_cli.main import cli

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    args = ["train", "--data", str(tiny_csv), "--out", str(tmp_path / "run"), "--preset", "cpu"]
    args += ["--model", "msiqa", "--pretrain-steps", "0", "--device", "cpu", "--no-swin"]
    result = CliRunner().invoke(cli, [*args, "--pretrained"])
    assert result.exit_code == 2, result.output
    assert "error: --resnet-weights: no ImageNet weights for resnet50" in result.output
    given = tmp_path / "swin.pth"
    given.write_bytes(b"x")
    result = CliRunner().invoke(cli, [*args, "--swin-weights", str(given)])
    assert result.exit_code == 2, result.output
    assert f"error: --swin-weights: {given}: weights given for" in result.output


def test_load_trunk_from_local_files_and_cache(tmp_path, monkeypatch, small_config):
    torch.manual_seed(1)
    source = MsIqa(small_config)
    full = {**source.resnet.state_dict(), "fc.weight": torch.zeros(1000, 2048)}
    torch.save({"state_dict": full}, tmp_path / "r50.pth")
    target = MsIqa(small_config)
    used = load_pretrained_trunks(target, resnet_weights=tmp_path / "r50.pth")
    assert used == {"resnet50": tmp_path / "r50.pth"}
    for key, value in source.resnet.state_dict().items():
        assert torch.equal(target.resnet.state_dict()[key], value)
    # the same weights found in a (fake, offline) Hugging Face cache
    from safetensors.torch import save_file

    snap = tmp_path / "hf" / "hub" / "models--timm--resnet50.tv_in1k" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in full.items()}, str(snap / "model.safetensors"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert resolve_weights("resnet50", None) == snap / "model.safetensors"
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(ModelError, match="not resnet50 weights"):
        load_pretrained_trunks(MsIqa(small_config), resnet_weights=tmp_path / "wrong.pth")
