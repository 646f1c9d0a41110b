"""The MS-IQA network (MICCAI 2025): ResNet-50 + Swin-T trunks, multi-scale feature fusion with
AGCA channel attention, and the weighted score regressor (Score = S x W).

Tensor conventions: images are NCHW float in the normalised range ``(x - 0.5) / 0.5`` (x in [0, 1]),
224 x 224 by default. The network predicts quality on the *normalised* label scale [0, 1]; the
mapping back to the 0..4 MOS scale lives in the checkpoint (see :mod:`petctiqa.iqa.checkpoint`).

Everything is vectorised over the batch, each trunk runs once per forward, and no device is
hard-coded, so the model runs on CPU or CUDA, under bf16/fp16 autocast and with channels_last.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from petctiqa.errors import ModelError

RESNET_NAME = "resnet50"
SWIN_NAME = "swin_tiny_patch4_window7_224"
RESNET_CHANNELS = (256, 512, 1024, 2048)
SWIN_CHANNELS = (96, 192, 384, 768)
FEATURE_DIM = 768
"""Width of f_w (channel max-pool target) and of Swin stage 4 (f_s)."""
HIDDEN_DIM = 384
AGCA_RATIO = 4


@dataclass(frozen=True)
class MsIqaConfig:
    """Architecture switches. The defaults are the paper's full model.

    Ablations (paper Table 2), as implemented here:

    - ``use_resnet=False`` ("w/o ResNet"): each fused stage holds Swin features only, so the
      per-stage widths are 96/192/384/768 before halving.
    - ``use_swin=False`` ("w/o Swin"): each fused stage holds ResNet features only; the score
      branch reads ResNet stage 4 (2048 channels) through its own AGCA and average pooling.
    - ``use_fusion=False`` ("w/o MSFFM"): no per-stage reduction, no per-stage AGCA and no
      multi-scale concatenation; f_w is the global max pool of the trunks' last stages,
      max-pooled over channels to 768.
    - ``use_weighting=False`` ("w/o SRM weighting"): no weight branch; one regressor
      (Linear-LeakyReLU-Dropout-Linear) reads concat(f_s, f_w), so the fused features still count.
    - ``stages``: which of stages 1-4 are fused (e.g. ``(1, 2, 3)``, ``(1, 2)``, ``(1,)``). f_w is
      max-pooled over channels to ``min(768, fused width)``.
    - ``reference_weighting=True`` reproduces the public reference code, whose score is
      sum(S*W)/sum(W) over a single output, i.e. S: W is computed but has no effect on the score.
    """

    use_resnet: bool = True
    use_swin: bool = True
    use_fusion: bool = True
    use_weighting: bool = True
    stages: tuple[int, ...] = (1, 2, 3, 4)
    reference_weighting: bool = False
    dropout: float = 0.5
    image_size: int = 224

    def __post_init__(self) -> None:
        if not (self.use_resnet or self.use_swin):
            raise ModelError("model config: use_resnet and use_swin cannot both be false")
        stages = tuple(self.stages)
        if (
            not stages
            or any(s not in (1, 2, 3, 4) for s in stages)
            or len(set(stages)) != len(stages)
        ):
            raise ModelError(f"model config: stages must be distinct values in 1..4, got {stages}")
        object.__setattr__(self, "stages", tuple(sorted(stages)))
        if self.image_size % 32 != 0 or self.image_size < 32:
            raise ModelError(
                f"model config: image_size must be a positive multiple of 32, got {self.image_size}"
            )
        if self.use_swin and self.image_size != 224:
            raise ModelError(
                f"model config: Swin-T needs image_size 224 (window 7), got {self.image_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = list(self.stages)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MsIqaConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"model config: unknown keys {sorted(unknown)}")
        values = dict(data)
        if "stages" in values:
            values["stages"] = tuple(int(s) for s in values["stages"])
        return cls(**values)


class Agca(nn.Module):
    """Adaptive graph channel attention (Xiang et al. 2023), ratio 4, as used by MS-IQA.

    y = GAP(x) -> 1x1 conv to C/r (no bias) -> node vector v (B, C/r).
    A = diag(softmax(conv1d(v))) + A2 (A2 learnable, initialised to 1e-6), v' = ReLU(conv1d(v A)),
    attention = sigmoid(1x1 conv back to C (no bias)), output = x * attention (per channel).
    ``v @ (diag(a) + A2)`` is computed as ``v * a + v @ A2`` (no B x C x C tensor).
    """

    def __init__(self, channels: int, ratio: int = AGCA_RATIO) -> None:
        super().__init__()
        hidden = channels // ratio
        self.squeeze = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.adjacency_gate = nn.Conv1d(1, 1, kernel_size=1, bias=False)
        self.adjacency = nn.Parameter(torch.full((hidden, hidden), 1e-6))
        self.node_mix = nn.Conv1d(1, 1, kernel_size=1, bias=False)
        self.excite = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.squeeze(x.mean(dim=(2, 3), keepdim=True)).flatten(1)  # (B, hidden)
        gate = torch.softmax(self.adjacency_gate(v.unsqueeze(1)), dim=2).squeeze(1)
        v = v * gate + v @ self.adjacency.to(v.dtype)
        v = torch.relu(self.node_mix(v.unsqueeze(1))).squeeze(1)
        attention = torch.sigmoid(self.excite(v[:, :, None, None]))
        return x * attention


def _regressor(in_features: int, final: nn.Module, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, HIDDEN_DIM),
        nn.LeakyReLU(0.01),
        nn.Dropout(dropout),
        nn.Linear(HIDDEN_DIM, 1),
        final,
    )


def needed_stages(config: MsIqaConfig) -> tuple[int, ...]:
    """Stages (1..4) the network reads: the fused ones, plus stage 4 for f_s (and for f_w when
    the fusion module is off)."""
    fused = set(config.stages) if config.use_fusion else set()
    return tuple(sorted(fused | {4}))


def resnet_stages(config: MsIqaConfig) -> tuple[int, ...]:
    """ResNet stages to build: later stages nobody reads are not built (no dead parameters)."""
    if config.use_fusion:
        wanted = set(config.stages) | ({4} if not config.use_swin else set())
    else:
        wanted = {4}
    return tuple(sorted(wanted))


def build_trunks(config: MsIqaConfig) -> tuple[nn.Module | None, nn.Module | None]:
    """The timm ``features_only`` trunks (random init; never downloads).

    ResNet-50 out_indices 1-4 are its four residual stages; Swin-T out_indices 0-3 are its four
    stages (returned NHWC). ResNet stages after the last one read are not built.
    """
    import timm  # lazy: slow to import (docs/architecture.md); only building a model needs it

    resnet = swin = None
    if config.use_resnet:
        resnet = timm.create_model(
            RESNET_NAME, pretrained=False, features_only=True, out_indices=resnet_stages(config)
        )
    if config.use_swin:
        swin = timm.create_model(
            SWIN_NAME, pretrained=False, features_only=True, out_indices=(0, 1, 2, 3)
        )
    return resnet, swin


class MsIqa(nn.Module):
    """MS-IQA. ``forward(images)`` returns the predicted quality (B,) on the normalised scale."""

    def __init__(self, config: MsIqaConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MsIqaConfig()
        self.resnet, self.swin = build_trunks(config)
        stage_widths = [
            (RESNET_CHANNELS[i] if config.use_resnet else 0)
            + (SWIN_CHANNELS[i] if config.use_swin else 0)
            for i in range(4)
        ]
        last_width = SWIN_CHANNELS[3] if config.use_swin else RESNET_CHANNELS[3]
        self.score_attention = Agca(last_width)
        self.score_attention_width = last_width
        if config.use_fusion:
            self.reducers = nn.ModuleList(
                nn.Conv2d(stage_widths[s - 1], stage_widths[s - 1] // 2, kernel_size=1)
                for s in config.stages
            )
            self.stage_attention = nn.ModuleList(
                Agca(stage_widths[s - 1] // 2) for s in config.stages
            )
            fused_width = sum(stage_widths[s - 1] // 2 for s in config.stages)
        else:
            self.reducers = nn.ModuleList()
            self.stage_attention = nn.ModuleList()
            fused_width = stage_widths[3]
        self.fw_dim = min(FEATURE_DIM, fused_width)
        self.channel_pool = nn.AdaptiveMaxPool1d(self.fw_dim)
        if config.use_weighting:
            self.score_branch = _regressor(last_width, nn.LeakyReLU(0.01), config.dropout)
            self.weight_branch: nn.Module | None = _regressor(
                self.fw_dim, nn.Sigmoid(), config.dropout
            )
        else:
            self.score_branch = _regressor(
                last_width + self.fw_dim, nn.LeakyReLU(0.01), config.dropout
            )
            self.weight_branch = None

    def stage_features(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """Per-stage NCHW features {stage: tensor}, ResNet and Swin concatenated on channels
        (ResNet first). Swin stage 4 alone is under key 0 (the score branch's input)."""
        out: dict[int, torch.Tensor] = {}
        swin: dict[int, torch.Tensor] = {}
        if self.swin is not None:
            # timm Swin stages are NHWC: permute once, here.
            swin = {i + 1: f.permute(0, 3, 1, 2) for i, f in enumerate(self.swin(images))}
            out[0] = swin[4]
        if self.resnet is not None:
            res = dict(zip(resnet_stages(self.config), self.resnet(images), strict=True))
            if self.swin is None:
                out[0] = res[4]
            for stage in needed_stages(self.config):
                if stage in res:
                    out[stage] = torch.cat((res[stage], swin[stage]), 1) if swin else res[stage]
        else:
            out.update(swin)
        return out

    def fused_feature(self, stages: dict[int, torch.Tensor]) -> torch.Tensor:
        """f_w: (B, fw_dim)."""
        if self.config.use_fusion:
            size = stages[0].shape[-2:]
            maps = []
            for reducer, attention, s in zip(
                self.reducers, self.stage_attention, self.config.stages, strict=True
            ):
                # Average pooling commutes with the 1x1 convolution, so pool first (cheaper).
                pooled = nn.functional.adaptive_avg_pool2d(stages[s], size)
                maps.append(attention(reducer(pooled)))
            fused = torch.cat(maps, dim=1)
        else:
            fused = stages[4]
        vector = fused.amax(dim=(2, 3))
        return self.channel_pool(vector.unsqueeze(1)).squeeze(1)

    def score_feature(self, stages: dict[int, torch.Tensor]) -> torch.Tensor:
        """f_s: (B, 768) from Swin stage 4 (ResNet stage 4, 2048, when Swin is off)."""
        return self.score_attention(stages[0]).mean(dim=(2, 3))

    def forward_parts(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"score", "s", "w"}`` each (B,); ``w`` is ones when weighting is off."""
        stages = self.stage_features(images)
        f_s = self.score_feature(stages)
        f_w = self.fused_feature(stages)
        if self.weight_branch is None:
            s = self.score_branch(torch.cat((f_s, f_w), dim=1)).squeeze(1)
            return {"score": s, "s": s, "w": torch.ones_like(s)}
        s = self.score_branch(f_s).squeeze(1)
        w = self.weight_branch(f_w).squeeze(1)
        if self.config.reference_weighting:
            # Reference code: sum(S*W)/sum(W) over one output == S; W gets no gradient.
            return {"score": s, "s": s, "w": w}
        return {"score": s * w, "s": s, "w": w}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(images)["score"]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """concat(f_s, f_w): the representation generator pretraining teaches (B, F)."""
        stages = self.stage_features(images)
        return torch.cat((self.score_feature(stages), self.fused_feature(stages)), dim=1)

    @property
    def feature_dim(self) -> int:
        return self.score_attention_width + self.fw_dim


def head_parameter_count(model: MsIqa) -> int:
    """Parameters of the fusion module and score regressor (everything but the trunks)."""
    trunk = {id(p) for m in (model.resnet, model.swin) if m is not None for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in trunk)


def parameter_count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class ParameterReport:
    total: int
    resnet: int
    swin: int
    head: int
    parts: dict[str, int] = field(default_factory=dict)


def parameter_report(model: MsIqa) -> ParameterReport:
    parts = {name: parameter_count(child) for name, child in model.named_children()}
    return ParameterReport(
        total=parameter_count(model),
        resnet=parameter_count(model.resnet),
        swin=parameter_count(model.swin),
        head=head_parameter_count(model),
        parts=parts,
    )
