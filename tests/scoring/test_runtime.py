"""The ONNX paths (ONNX Runtime, OpenVINO) score like eager PyTorch; the runtime choice."""

from __future__ import annotations

import json

import pytest
import torch

from petctiqa.errors import ModelError
from petctiqa.iqa.score import Scorer
from petctiqa.scoring import runtime as runtime_module
from petctiqa.scoring.runtime import AUTO_ONNX_MIN_INPUTS, GatherMaxPool1d, choose_runtime

ONNX_PACKAGE = {"ort": "onnxruntime", "openvino": "openvino"}


def test_gather_max_pool_equals_adaptive_max_pool():
    x = torch.randn(3, 1, 2640)
    for length, out in ((2640, 768), (100, 7), (768, 768), (5, 3)):
        a = torch.nn.AdaptiveMaxPool1d(out)(x[..., :length])
        b = GatherMaxPool1d(out)(x[..., :length])
        assert torch.equal(a, b)


@pytest.mark.parametrize("runtime", ["ort", "openvino"])
def test_onnx_runtime_scores_equal_eager_within_1e_3(runtime, checkpoint, archive, tmp_path):
    pytest.importorskip(ONNX_PACKAGE[runtime])
    scorer = Scorer(checkpoint, "cpu")
    images = sorted((archive / "images").glob("*.png"))
    eager = scorer.score(images, batch_size=2)
    model, name, why = scorer.runtime_model(runtime, len(images), 2, cache_dir=tmp_path / "onnx")
    assert (name, why) == (runtime, "requested")
    assert type(model).__name__ == {"ort": "OrtModel", "openvino": "OpenVinoModel"}[runtime]
    model.warm(scorer.input_shapes())  # the session opens before the first batch
    assert list(model.sessions) == [(3, 64, 64)]
    fast = scorer.score(images, batch_size=2, model=model)  # 3 images: a padded last batch
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
    assert len({round(r.score, 6) for r in eager}) == len(eager)  # distinct scores to compare
    for a, b in zip(eager, fast, strict=True):
        assert a.source == b.source
        assert abs(a.score - b.score) < 1e-3 and abs(a.w - b.w) < 1e-3
    # auto picks the cached export, in the runtime it prefers (OpenVINO when installed)
    _, name, why = scorer.runtime_model("auto", 1, 2, cache_dir=tmp_path / "onnx")
    preferred = "openvino" if runtime_module.runtime_available("openvino") else "ort"
    assert (name, why) == (preferred, "export cached")


def test_runtime_choice(monkeypatch):
    assert choose_runtime("eager", "cpu", 10**6, True) == ("eager", "requested")
    assert choose_runtime("auto", "cuda", 10**6, False)[0] == "eager"
    with pytest.raises(ModelError, match="CPU only"):
        choose_runtime("ort", "cuda", 1, False)
    with pytest.raises(ModelError, match="runtime openvino runs on the CPU only"):
        choose_runtime("openvino", "cuda", 1, False)
    with pytest.raises(ModelError, match="not one of auto, eager, ort, openvino"):
        choose_runtime("tensorrt", "cpu", 1, False)
    for installed, fast in (({"ort", "openvino"}, "openvino"), ({"ort"}, "ort")):
        monkeypatch.setattr(runtime_module, "runtime_available", installed.__contains__)
        assert choose_runtime("auto", "cpu", AUTO_ONNX_MIN_INPUTS - 1, False)[0] == "eager"
        assert choose_runtime("auto", "cpu", AUTO_ONNX_MIN_INPUTS, False)[0] == fast
        assert choose_runtime("auto", "cpu", 1, True) == (fast, "export cached")
    monkeypatch.setattr(runtime_module, "runtime_available", lambda name: False)
    assert choose_runtime("auto", "cpu", 10**6, True) == (
        "eager", "neither openvino nor onnxruntime is installed"
    )  # fmt: skip
    with pytest.raises(ModelError, match="runtime openvino needs openvino and onnx and onnxscript"):
        choose_runtime("openvino", "cpu", 1, False)


@pytest.mark.parametrize("runtime", ["ort", "openvino"])
def test_petct_cnn_whole_image_onnx_equals_eager(runtime, archive, tmp_path):
    """petct-cnn evaluates whole images (grid 0): one export per image size."""
    pytest.importorskip(ONNX_PACKAGE[runtime])
    from PIL import Image

    from petctiqa.iqa.checkpoint import save_checkpoint
    from petctiqa.iqa.preprocess import Preprocessing
    from petctiqa.models import get_model_entry

    entry = get_model_entry("petct-cnn")
    config = entry.default_config()
    torch.manual_seed(0)
    model = entry.build(config).eval()
    with torch.no_grad():  # a non-constant response table, so scores differ between images
        for name, parameter in model.named_parameters():
            if name.endswith("values"):
                parameter.copy_(torch.linspace(0.0, 1.0, parameter.numel()))
    path = tmp_path / "cnn.pt"
    save_checkpoint(path, {
        "model_name": "petct-cnn", "config": config.to_dict(),
        "label_scale": {"low": 0.0, "high": 4.0}, "model": model.state_dict(),
        "preprocessing": Preprocessing(size=64, mode="crops", grid=0).to_dict(),
    })  # fmt: skip
    images = sorted((archive / "images").glob("*.png"))
    wide = tmp_path / "wide.png"
    Image.open(images[2]).resize((80, 48)).save(wide)
    images.append(wide)
    scorer = Scorer(path, "cpu")
    eager = scorer.score(images, batch_size=2)
    model_ort, name, _ = scorer.runtime_model(runtime, 4, 2, cache_dir=tmp_path / "onnx")
    fast = scorer.score(images, batch_size=2, model=model_ort)
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2  # 48 x 48 and 48 x 80
    assert len({round(r.score, 4) for r in eager}) > 1
    for a, b in zip(eager, fast, strict=True):
        assert abs(a.score - b.score) < 1e-3


def test_score_amp_and_channels_last_reach_the_eager_model(checkpoint, archive, tmp_path):
    from click.testing import CliRunner

    from petctiqa_cli.main import cli

    images = sorted((archive / "images").glob("*.png"))
    plain = Scorer(checkpoint, "cpu", amp="auto", channels_last=None)  # the CLI's defaults
    assert plain.amp_dtype is None and plain.channels_last is False  # both are for CUDA
    low = Scorer(checkpoint, "cpu", amp="bf16", channels_last=True)
    assert low.amp_dtype == torch.bfloat16 and low.channels_last
    reference = [r.score for r in plain.score(images, batch_size=2)]
    mixed = [r.score for r in low.score(images, batch_size=2)]
    differences = [abs(a - b) for a, b in zip(reference, mixed, strict=True)]
    assert 1e-5 < max(differences) < 5e-2  # bf16 moves scores, a little
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(cli, [
        "score", *map(str, images), "--checkpoint", str(checkpoint), "--device", "cpu",
        "--runtime", "eager", "--amp", "bf16", "--channels-last", "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    written = [row["score"] for row in json.loads(out.read_text())]
    assert written == pytest.approx(mixed, abs=1e-6)  # the bf16 scores, not the float32 ones
