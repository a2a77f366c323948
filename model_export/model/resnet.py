"""The hybrid ViT's CNN: a BiT-style ResNet v1 (weight-standardised convs, GroupNorm, TF "SAME").

Paper §3.1: "as an alternative to raw image patches, the input sequence can be formed from feature
maps of a CNN". The backbone is a ResNet v1 (post-activation bottlenecks) in which every conv
standardises its kernel and every norm is a 32-group GroupNorm, padded the way TensorFlow pads
"SAME" (extra row/column at the bottom/right), so the weights of Google's Flax and of timm fit it.

    stem:   conv 7×7/2 (64·w) → GN → ReLU → max-pool 3×3/2          stride 4
    stage i (i = 0, 1, …): n_i bottlenecks of 256·w·2^i channels, the first with stride 1 (i = 0)
            or 2, so R50's (3, 4, 9) ends at stride 16 and R26's (2, 2, 2, 2) at 32.

Module names follow timm (stem.conv, stem.norm, stages.N.blocks.M.{conv,norm}{1,2,3},
…downsample.{conv,norm}), so a timm state dict needs almost no mapping. The two sources do not
compute the same function: timm standardises with (w - μ)/√(σ² + 1e-8) and uses GroupNorm eps
1e-5; Flax uses (w - μ)/(σ + 1e-5) and eps 1e-6. The config says which (ViTConfig.backbone_std,
backbone_gn_eps), so each checkpoint runs the numerics it was trained with.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

WeightStd = Literal["timm", "flax"]
M = TypeVar("M", bound=nn.Module)
STEM_WIDTH = 64  # stem channels at width factor 1
STAGE_WIDTH = 256  # first stage's output channels at width factor 1; each later stage doubles
GROUPS = 32  # GroupNorm groups, in BiT and both hybrid sources


class BackboneConfig(Protocol):
    """What the backbone reads of the model's config (vit.ViTConfig holds these fields): a
    structural type, so the ResNet needs no import of the ViT that owns it."""

    @property
    def channels(self) -> int: ...
    @property
    def backbone(self) -> tuple[int, ...] | None: ...
    @property
    def backbone_width(self) -> int: ...
    @property
    def backbone_gn_eps(self) -> float: ...
    @property
    def backbone_std(self) -> WeightStd: ...


def backbone_stride(stages: tuple[int, ...]) -> int:
    """Pixels per feature-map cell: 4 after the stem, ×2 for every stage after the first."""
    return 4 * 2 ** max(len(stages) - 1, 0)


def backbone_channels(stages: tuple[int, ...], width: int) -> int:
    """Channels of the feature map the patch embedding reads."""
    return stage_channels(len(stages) - 1, width) if stages else STEM_WIDTH * width


def stage_channels(stage: int, width: int) -> int:
    """Output channels of stage i (0-based): 256·w, doubling at every stage."""
    return STAGE_WIDTH * width * 2**stage


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME": output ceil(size / stride); the odd pixel of padding goes after (bottom/right)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    (top, bottom), (left, right) = (same_padding(s, kernel, stride) for s in x.shape[-2:])
    return F.pad(x, (left, right, top, bottom), value=value)


class StdConv2d(nn.Conv2d):
    """Conv with a standardised kernel (zero mean, unit variance per output channel); SAME pad."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, std: WeightStd) -> None:
        super().__init__(c_in, c_out, kernel, stride, padding=0, bias=False)
        self.std: WeightStd | None = std  # None: the weight is already standardised (folded)

    def standardised_weight(self) -> torch.Tensor:
        w = self.weight  # (C_out, C_in, k, k)
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        if self.std == "flax":  # vit_jax weight_standardize: eps added to the std
            return (w - mean) / (var.sqrt() + 1e-5)
        return (w - mean) / torch.sqrt(var + 1e-8)  # timm StdConv2dSame(eps=1e-8): inside the root

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size[0], self.stride[0])
        weight = self.weight if self.std is None else self.standardised_weight()
        return F.conv2d(x, weight, None, self.stride)


def fold_weight_standardisation(module: M) -> M:
    """Store every StdConv2d's standardised kernel once, in float32, for an inference graph.

    The exported graph then holds plain conv weights: nothing recomputed per call, and no kernel
    statistics taken in float16, where a small kernel's variance falls into subnormals.
    """
    with torch.no_grad():
        for conv in module.modules():
            if isinstance(conv, StdConv2d) and conv.std is not None:
                conv.weight.copy_(conv.standardised_weight())
                conv.std = None
    return module


class ConvNorm(nn.Module):
    """StdConv → GroupNorm, the unit every part of the backbone is built from."""

    def __init__(
        self, config: BackboneConfig, c_in: int, c_out: int, kernel: int, stride: int
    ) -> None:
        super().__init__()
        self.conv = StdConv2d(c_in, c_out, kernel, stride, config.backbone_std)
        self.norm = nn.GroupNorm(GROUPS, c_out, eps=config.backbone_gn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class Stem(nn.Module):
    """Root block: conv 7×7/2 → GN → ReLU → max-pool 3×3/2 (SAME, padded with -inf): stride 4."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        width = STEM_WIDTH * config.backbone_width
        self.conv = StdConv2d(config.channels, width, 7, 2, config.backbone_std)
        self.norm = nn.GroupNorm(GROUPS, width, eps=config.backbone_gn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.conv(x)))  # (B, 64w, H/2, W/2)
        x = pad_same(x, 3, 2, value=float("-inf"))  # -inf: padding never wins the max
        return F.max_pool2d(x, 3, 2)  # (B, 64w, H/4, W/4)


class Bottleneck(nn.Module):
    """ResNet v1 bottleneck: 1×1 → 3×3 (carries the stride) → 1×1, ReLU after the residual add."""

    def __init__(self, config: BackboneConfig, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        mid = c_out // 4
        project = c_in != c_out or stride != 1
        self.downsample = ConvNorm(config, c_in, c_out, 1, stride) if project else None
        self.conv1 = StdConv2d(c_in, mid, 1, 1, config.backbone_std)
        self.norm1 = nn.GroupNorm(GROUPS, mid, eps=config.backbone_gn_eps)
        self.conv2 = StdConv2d(mid, mid, 3, stride, config.backbone_std)
        self.norm2 = nn.GroupNorm(GROUPS, mid, eps=config.backbone_gn_eps)
        self.conv3 = StdConv2d(mid, c_out, 1, 1, config.backbone_std)
        self.norm3 = nn.GroupNorm(GROUPS, c_out, eps=config.backbone_gn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if self.downsample is not None else x
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))  # (B, mid, H/stride, W/stride)
        y = self.norm3(self.conv3(y))
        return F.relu(y + shortcut)


class Stage(nn.Module):
    def __init__(
        self, config: BackboneConfig, c_in: int, c_out: int, depth: int, stride: int
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *(
                Bottleneck(config, c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                for i in range(depth)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ResNet(nn.Module):
    """Stem, then config.backbone stages: (B, C, H, W) → (B, C', H/s, W/s), s = backbone_stride."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        assert config.backbone is not None, "ResNet needs config.backbone (a stage tuple)"
        self.stem = Stem(config)
        c_in, stages = STEM_WIDTH * config.backbone_width, []
        for i, depth in enumerate(config.backbone):
            c_out = stage_channels(i, config.backbone_width)
            stages.append(Stage(config, c_in, c_out, depth, stride=1 if i == 0 else 2))
            c_in = c_out
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))
