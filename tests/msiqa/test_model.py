from __future__ import annotations

import pytest
import torch

from petctiqa.errors import ModelError
from petctiqa.msiqa.model import MsIqa, MsIqaConfig, parameter_report


@pytest.fixture(scope="module")
def full_model():
    torch.manual_seed(0)
    return MsIqa().eval()


def test_parameter_counts_match_the_paper_architecture(full_model):
    report = parameter_report(full_model)
    assert report.resnet == 23_508_032
    assert report.swin == 27_517_818
    assert report.head == 7_672_748
    assert report.total == 58_698_598
    agca = [sum(p.numel() for p in m.parameters()) for m in full_model.stage_attention]
    assert agca == [17_426, 69_698, 278_786, 1_115_138]
    assert report.parts["score_attention"] == 331_778
    reducers = [sum(p.numel() for p in m.parameters()) for m in full_model.reducers]
    assert reducers == [62_128, 248_160, 991_936, 3_966_336]
    assert report.parts["score_branch"] == report.parts["weight_branch"] == 295_681


def test_stage_shapes_and_outputs(full_model):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        stages = full_model.stage_features(x)
        assert {k: tuple(v.shape) for k, v in stages.items()} == {
            0: (2, 768, 7, 7),
            1: (2, 352, 56, 56),
            2: (2, 704, 28, 28),
            3: (2, 1408, 14, 14),
            4: (2, 2816, 7, 7),
        }
        assert full_model.score_feature(stages).shape == (2, 768)
        assert full_model.fused_feature(stages).shape == (2, 768)
        parts = full_model.forward_parts(x)
    assert parts["score"].shape == (2,)
    assert torch.allclose(parts["score"], parts["s"] * parts["w"])
    assert bool(((parts["w"] > 0) & (parts["w"] < 1)).all())


def test_channels_last_and_bf16_autocast_agree(full_model):
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = full_model(x)
        cl = full_model.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last)
        )
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = full_model(x)
    full_model.to(memory_format=torch.contiguous_format)
    assert torch.allclose(ref, cl, atol=1e-5)
    assert low.dtype in (torch.bfloat16, torch.float32)
    assert torch.allclose(ref, low.float(), atol=5e-2)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "fw_dim", "total"),
    [
        (MsIqaConfig(use_resnet=False), 720, 28_925_094),
        (MsIqaConfig(use_swin=False), 768, 30_520_780),
        (MsIqaConfig(use_fusion=False), 768, 51_948_990),
        (MsIqaConfig(use_weighting=False), 768, 58_697_829),
        (MsIqaConfig(stages=(1, 2, 3)), 768, 38_652_388),
        (MsIqaConfig(stages=(1,)), 176, 28_518_528),
    ],
)
def test_ablation_shapes(config, fw_dim, total):
    model = MsIqa(config).eval()
    assert model.fw_dim == fw_dim
    assert parameter_report(model).total == total
    with torch.no_grad():
        parts = model.forward_parts(torch.randn(1, 3, 224, 224))
    assert parts["score"].shape == (1,)
    if not config.use_weighting:
        assert torch.equal(parts["w"], torch.ones(1))


def test_reference_weighting_ignores_w_and_gives_it_no_gradient(small_config):
    from dataclasses import replace

    model = MsIqa(replace(small_config, reference_weighting=True)).train()
    parts = model.forward_parts(torch.randn(2, 3, 64, 64))
    assert torch.equal(parts["score"], parts["s"])
    parts["score"].sum().backward()
    assert all(p.grad is None for p in model.weight_branch.parameters())
    assert all(p.grad is None for p in model.reducers.parameters())
    assert model.score_branch[0].weight.grad is not None


def test_config_validation_and_round_trip():
    with pytest.raises(ModelError, match="cannot both be false"):
        MsIqaConfig(use_resnet=False, use_swin=False)
    with pytest.raises(ModelError, match="stages"):
        MsIqaConfig(stages=(0, 5))
    with pytest.raises(ModelError, match="224"):
        MsIqaConfig(image_size=64)
    config = MsIqaConfig(stages=(2, 1), use_fusion=False)
    assert config.stages == (1, 2)
    assert MsIqaConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ModelError, match="unknown keys"):
        MsIqaConfig.from_dict({"depth": 3})
