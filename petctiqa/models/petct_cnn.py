"""``petct-cnn``: a compact CNN for native-resolution PET/CT crops that trains on a 2-core CPU.

Why this shape: the distortions radiologists rated are pixel-level (isolated impulses, grain,
8x8 JPEG blocking), so the network reads crops at native resolution. Beside the RGB channels it
reads each channel's *prominence* (its value minus the largest of its 8 neighbours, kept where
positive): a fixed, parameter-free filter, because a CNN trained from scratch on a few thousand
generator crops did not learn to isolate one-pixel impulses by itself (the impulse strength stayed
at chance on unseen patients without it, and reached a correlation of 0.88 with it; see
docs/learning.md). Two full-resolution 3x3 layers come before any striding, then strides 4 and 2
so that stage 3's cells are exactly the JPEG's 8x8 blocks (crops are 16-aligned). Global mean and
standard deviation pooling turn the maps into densities (how many impulses, how much grain per
area), which is what the distortion strengths are. A small *distortion head* predicts the
distortion strengths (taught by ``petctiqa pretrain`` from generator labels, scaled so the
protocol's strongest level is 1), and the quality head is a *response table* over those
strengths: MOS values at knots 0, 0.5, 1 of each axis, interpolated multilinearly. That is
the level-table baseline made continuous and differentiable: it represents the non-monotone MOS
surface of the published data (JPEG 70 beats 100 under noise) with few parameters, and it is
first fitted in closed form (ridge least squares) on the training images' MOS before any
gradient step (:meth:`PetctCnn.fit_quality_head`), so a few hundred rated images suffice.

About 0.29 M parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from petctiqa.errors import ModelError
from petctiqa.models.registry import ModelEntry, register_model


@dataclass(frozen=True)
class PetctCnnConfig:
    width: int = 16
    """Channels of the full-resolution layers; later stages use 2x, 4x and 8x."""
    distortion_outputs: int = 3
    """Distortion parameters the distortion head predicts (one per protocol axis)."""
    hidden: int = 64
    knots: int = 3
    """Knots per axis of the response table (evenly spaced over 0..1; 3 = the protocol's
    levels). Chosen with ``ridge`` by leave-one-patient-out on the dev sample (docs/learning.md)."""
    ridge: float = 0.1
    """Ridge penalty of the closed-form table fit (pulls cells without data to the mean)."""

    def __post_init__(self) -> None:
        if self.width < 4 or self.distortion_outputs < 1 or self.hidden < 4 or self.knots < 2:
            raise ModelError(f"petct-cnn config: sizes too small ({self})")
        if self.ridge < 0:
            raise ModelError(f"petct-cnn config: ridge must be >= 0, got {self.ridge}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PetctCnnConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ModelError(f"petct-cnn config: unknown keys {sorted(unknown)}")
        return cls(**data)


def prominence(images: torch.Tensor) -> torch.Tensor:
    """Per channel: value minus the maximum of its 8 neighbours, where positive (B, C, H, W)."""
    padded = nn.functional.pad(images, (1, 1, 1, 1), mode="replicate")
    height, width = images.shape[-2:]
    neighbours = [
        padded[..., 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if dy or dx
    ]
    return torch.relu(images - torch.stack(neighbours).amax(dim=0))


def _conv(inputs: int, outputs: int, kernel: int, stride: int) -> nn.Sequential:
    padding = kernel // 2 if stride == 1 else 0
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, kernel, stride, padding=padding, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class ResponseTable(nn.Module):
    """Values on a regular grid over [0, 1]^d, read by multilinear interpolation (inputs
    clamped to the grid)."""

    def __init__(self, axes: int, knots: int) -> None:
        super().__init__()
        self.axes, self.knots = axes, knots
        self.values = nn.Parameter(torch.full((knots**axes,), 0.5))

    def basis(self, strengths: torch.Tensor) -> torch.Tensor:
        """(B, knots**axes) interpolation weights of (B, axes) strengths."""
        grid = torch.linspace(0.0, 1.0, self.knots, device=strengths.device)
        spacing = 1.0 / (self.knots - 1)
        weights = torch.ones(strengths.shape[0], 1, device=strengths.device)
        for axis in range(self.axes):
            v = strengths[:, axis : axis + 1].clamp(0.0, 1.0)
            hat = torch.relu(1.0 - (v - grid).abs() / spacing)
            weights = (weights[:, :, None] * hat[:, None, :]).flatten(1)
        return weights

    def forward(self, strengths: torch.Tensor) -> torch.Tensor:
        return self.basis(strengths.float()) @ self.values

    @torch.no_grad()
    def fit(self, strengths: torch.Tensor, targets: torch.Tensor, ridge: float) -> None:
        """Ridge least squares towards the targets' mean (closed form, float64)."""
        basis = self.basis(strengths.float()).double()
        mean = targets.double().mean()
        gram = basis.T @ basis + ridge * torch.eye(basis.shape[1], dtype=torch.float64)
        solution = torch.linalg.solve(gram, basis.T @ (targets.double() - mean))
        self.values.copy_((solution + mean).float())


class PetctCnn(nn.Module):
    def __init__(self, config: PetctCnnConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PetctCnnConfig()
        w = config.width
        self.trunk = nn.Sequential(
            _conv(6, w, 3, 1),
            _conv(w, w, 3, 1),
            _conv(w, 2 * w, 4, 4),
            _conv(2 * w, 4 * w, 2, 2),  # one cell per 8x8 JPEG block
            _conv(4 * w, 4 * w, 3, 1),
            _conv(4 * w, 8 * w, 2, 2),
            _conv(8 * w, 8 * w, 3, 1),
        )
        self.feature_dim = 16 * w
        self.distortion_head = nn.Sequential(
            nn.Linear(self.feature_dim, config.hidden * 2),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden * 2, config.distortion_outputs),
        )
        self.quality_head = ResponseTable(config.distortion_outputs, config.knots)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.trunk(torch.cat((images, 2.0 * prominence(images)), dim=1))
        return torch.cat((maps.mean(dim=(2, 3)), maps.std(dim=(2, 3))), dim=1)

    def distortions(self, images: torch.Tensor) -> torch.Tensor:
        return self.distortion_head(self.features(images))

    def forward_parts(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        score = self.quality_head(self.distortions(images))
        return {"score": score, "s": score, "w": torch.ones_like(score)}

    @torch.no_grad()
    def fit_quality_head(self, stacks, targets) -> None:
        """Fit the response table in closed form: ``stacks`` yields each training image's
        (k, 3, S, S) evaluation inputs, ``targets`` are their normalised MOS."""
        was_training = self.training
        self.eval()
        strengths = torch.stack(
            [self.distortions(torch.from_numpy(stack)).mean(dim=0) for stack in stacks]
        )
        self.quality_head.fit(strengths, torch.as_tensor(targets), self.config.ridge)
        self.train(was_training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(images)["score"]


register_model(
    ModelEntry(
        name="petct-cnn",
        architecture="petct-cnn",
        summary="compact CNN over native-resolution crops with a distortion head; CPU-class",
        input_contract="RGB at native resolution: 256-px 16-aligned crops in training, the "
        "whole image at evaluation",
        needs_gpu=False,
        config_from_dict=PetctCnnConfig.from_dict,
        build=PetctCnn,
        default_config=PetctCnnConfig,
        head_prefixes=("quality_head.",),
    )
)
