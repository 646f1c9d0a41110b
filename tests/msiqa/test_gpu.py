"""CUDA tests: AMP training steps (bf16; fp16 with GradScaler), channels_last, CUDA vs CPU scores,
the CUDA RNG state in checkpoints, and the throughput benchmark. Skipped without a CUDA device."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from petctiqa.iqa.device import autocast_dtype
from petctiqa.iqa.loss import msiqa_loss
from petctiqa.msiqa.model import MsIqa, MsIqaConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "msiqa_throughput.py"


@pytest.fixture
def exact_fp32():
    """Full fp32 convolutions and matmuls (no TF32) so CUDA and CPU results agree closely."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _no_dropout(model: MsIqa) -> MsIqa:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_training_steps_lower_the_loss(amp, small_config):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    device = torch.device("cuda")
    dtype = autocast_dtype(device, amp)
    assert dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    torch.manual_seed(0)
    model = _no_dropout(MsIqa(small_config)).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    assert scaler.is_enabled() == (amp == "fp16")
    x = torch.randn(8, 3, 64, 64, device=device)
    y = torch.linspace(0, 1, 8, device=device)

    def loss_now() -> float:
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
            return float(msiqa_loss(model(x), y))

    before = loss_now()
    for _ in range(20):  # fp16: the first steps may be skipped while GradScaler finds its scale
        with torch.autocast("cuda", dtype=dtype):
            pred = model(x)
        assert pred.dtype == dtype
        loss = msiqa_loss(pred, y)
        assert loss.dtype == torch.float32
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if loss_now() < before:
            break
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if amp == "fp16":
        assert math.isfinite(scaler.get_scale()) and scaler.get_scale() > 0
    assert loss_now() < before


def test_channels_last_on_cuda_matches_contiguous(exact_fp32):
    torch.manual_seed(0)
    model = MsIqa().cuda().eval()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    with torch.no_grad():
        ref = model.forward_parts(x)
        model.to(memory_format=torch.channels_last)
        weight = model.resnet.conv1.weight
        assert weight.is_contiguous(memory_format=torch.channels_last)
        cl = model.forward_parts(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(x.contiguous(memory_format=torch.channels_last))
    for key in ("score", "s", "w"):
        assert torch.allclose(ref[key], cl[key], atol=1e-4, rtol=1e-4), key
    assert torch.allclose(ref["score"], low.float(), atol=5e-2)


def test_training_loop_on_cuda_with_amp_and_channels_last(tiny_csv, small_config, tmp_path):
    from petctiqa.iqa.checkpoint import read_checkpoint
    from petctiqa.iqa.data import load_iqa_dataset
    from petctiqa.iqa.train import TrainOptions, train

    options = TrainOptions(
        epochs=1,
        batch_size=4,
        device="cuda",
        amp="fp16",
        channels_last=True,
        model=small_config,
        progress=False,
    )
    result = train(load_iqa_dataset(tiny_csv), tmp_path / "run", options)
    assert result.history and math.isfinite(result.history[0]["train_loss"])
    data = read_checkpoint(result.last_checkpoint)
    assert data["scaler"]  # fp16: GradScaler state saved for --resume
    cuda_states = data["rng"]["cuda"]
    assert len(cuda_states) == torch.cuda.device_count()
    assert cuda_states[0].dtype == torch.uint8
    resumed = train(
        load_iqa_dataset(tiny_csv),
        tmp_path / "run",
        replace(options, epochs=2, resume=True),
    )
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_cuda_rng_state_round_trip():
    from petctiqa.iqa.device import restore_rng_state, rng_state

    torch.cuda.init()
    torch.cuda.manual_seed_all(11)
    state = rng_state()
    assert "cuda" in state
    first = torch.rand(4, device="cuda")
    torch.rand(100, device="cuda")
    restore_rng_state(state)
    assert torch.equal(torch.rand(4, device="cuda"), first)


def test_cuda_scores_equal_cpu_scores(trained_run, tiny_csv, exact_fp32):
    from petctiqa.iqa.score import Scorer

    images = sorted(tiny_csv.parent.glob("img*.png"))
    cpu = Scorer(trained_run.best_checkpoint, "cpu").score(images, batch_size=5)
    gpu_scorer = Scorer(trained_run.best_checkpoint, "cuda")
    assert next(gpu_scorer.model.parameters()).device.type == "cuda"
    gpu = gpu_scorer.score(images, batch_size=5)
    assert [r.source for r in gpu] == [r.source for r in cpu]
    for name in ("score", "s", "w"):
        a = np.array([getattr(r, name) for r in cpu])
        b = np.array([getattr(r, name) for r in gpu])
        assert np.allclose(a, b, rtol=1e-4, atol=1e-4), (name, np.abs(a - b).max())
    auto = Scorer(trained_run.best_checkpoint, "auto")
    assert auto.device.type == "cuda"


def test_throughput_benchmark_on_cuda():
    spec = importlib.util.spec_from_file_location("msiqa_throughput", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.measure("cuda", batch=4, steps=1)
    assert set(result) == {"train", "inference"}
    assert all(math.isfinite(v) and v > 0 for v in result.values())
    # --device auto picks CUDA here
    assert bench.resolve_device("auto").type == "cuda"
    small = bench.measure(
        "auto", batch=2, steps=1, config=MsIqaConfig(use_swin=False, image_size=64)
    )
    assert all(v > 0 for v in small.values())
