"""The ONNX Runtime path scores like eager PyTorch; the runtime choice."""

from __future__ import annotations

import pytest
import torch

from petctiqa.errors import ModelError
from petctiqa.iqa.score import Scorer
from petctiqa.scoring.runtime import AUTO_ORT_MIN_INPUTS, GatherMaxPool1d, choose_runtime


def test_gather_max_pool_equals_adaptive_max_pool():
    x = torch.randn(3, 1, 2640)
    for length, out in ((2640, 768), (100, 7), (768, 768), (5, 3)):
        a = torch.nn.AdaptiveMaxPool1d(out)(x[..., :length])
        b = GatherMaxPool1d(out)(x[..., :length])
        assert torch.equal(a, b)


def test_ort_scores_equal_eager_within_1e_3(checkpoint, archive, tmp_path):
    pytest.importorskip("onnxruntime")
    scorer = Scorer(checkpoint, "cpu")
    images = sorted((archive / "images").glob("*.png"))
    eager = scorer.score(images, batch_size=2)
    model, name, why = scorer.runtime_model("ort", len(images), 2, cache_dir=tmp_path / "onnx")
    assert (name, why) == ("ort", "requested")
    fast = scorer.score(images, batch_size=2, model=model)  # 3 images: a padded last batch
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
    for a, b in zip(eager, fast, strict=True):
        assert a.source == b.source
        assert abs(a.score - b.score) < 1e-3 and abs(a.w - b.w) < 1e-3
    # auto picks the cached export
    _, name, why = scorer.runtime_model("auto", 1, 2, cache_dir=tmp_path / "onnx")
    assert (name, why) == ("ort", "export cached")


def test_runtime_choice():
    assert choose_runtime("eager", "cpu", 10**6, True) == ("eager", "requested")
    assert choose_runtime("auto", "cuda", 10**6, False)[0] == "eager"
    assert choose_runtime("auto", "cpu", AUTO_ORT_MIN_INPUTS - 1, False)[0] == "eager"
    assert choose_runtime("auto", "cpu", AUTO_ORT_MIN_INPUTS, False)[0] == "ort"
    with pytest.raises(ModelError, match="CPU only"):
        choose_runtime("ort", "cuda", 1, False)
