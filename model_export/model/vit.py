"""The Vision Transformer of Dosovitskiy et al. (2021), "An image is worth 16x16 words".

Reads top-down: ViTConfig → PatchEmbed → Attention → MLP → Block → ViT. The position-embedding
resize used for fine-tuning at a higher resolution is in pos_embed.py. The equations (paper §3.1):

    z0  = [x_class; x_p^1 E; ...; x_p^N E] + E_pos          (1)   x_p: image patches, or for the
                                                                    hybrid, patches of a ResNet's
                                                                    feature map (resnet.py)
    z'l = MSA(LN(z_{l-1})) + z_{l-1}                          (2)
    zl  = MLP(LN(z'l)) + z'l                                  (3)
    y   = LN(z_L^0)                                           (4)
    logits = head(y)   (or head(tanh(pre_logits(y))) for checkpoints with a representation layer)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from model_export.model.pos_embed import DEFAULT_POS_EMBED_RESIZE, PosEmbedResize, resize_pos_embed
from model_export.model.resnet import ResNet, WeightStd, backbone_channels, backbone_stride
from vit_core.geometry import TokenGrid, fits

Gelu = Literal["erf", "tanh"]
Interpolation = Literal["bicubic", "bilinear", "nearest"]
ResizeMode = Literal["squash", "crop"]


@dataclass(frozen=True)
class ViTConfig(TokenGrid):
    image_size: int | tuple[int, int] = 224  # input H = W, or (H, W) as timm's img_size
    patch_size: int = 16  # P: each token is a P×P patch of the image, or of the backbone's map
    channels: int = 3  # RGB
    dim: int = 768  # D, the hidden size every layer keeps
    depth: int = 12  # L, encoder blocks
    heads: int = 12  # attention heads; D must divide evenly
    mlp_dim: int = 3072  # MLP hidden size (4·D in every paper preset)
    num_classes: int = 1000  # K; 0 means no head (embedding-only model)
    eps: float = 1e-6  # LayerNorm epsilon: Flax/timm use 1e-6, HF ViT configs say 1e-12
    gelu: Gelu = "erf"  # Google's Flax checkpoints trained with tanh-GELU; timm/HF use erf
    qkv_bias: bool = True  # every released ViT has biases on q, k, v
    representation_size: int | None = None  # the paper's pre-logits layer (ImageNet-21k models)
    # Preprocessing that belongs to the weights (timm's _cfg): the service reads it from the bundle.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # Google/HF ViT normalise to [-1, 1]
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: Interpolation = "bicubic"  # resize filter for input images
    resize_mode: ResizeMode = "squash"  # squash: straight to H×W (HF); crop: shorter side, centre
    crop_pct: float = 1.0  # with resize_mode="crop": resize shorter side to image_size / crop_pct
    labels: tuple[str, ...] = field(default=())  # class names in head order, () when unknown
    # Hybrid (§3.1): a ResNet turns the image into a feature map and the patches come from that.
    backbone: tuple[int, ...] | None = None  # None: plain ViT; (): stem only; (3, 4, 9): R50
    backbone_width: int = 1  # width factor: 64·w stem channels, 256·w·2^i out of stage i
    # The two hybrid sources compute different functions (resnet.py); the weights say which.
    backbone_gn_eps: float = 1e-5  # GroupNorm epsilon: timm 1e-5, Flax 1e-6
    backbone_std: WeightStd = "timm"  # kernel standardisation: "timm" or "flax" (resnet.py)

    def __post_init__(self) -> None:
        if isinstance(self.image_size, (tuple, list)):  # (H, W); a square one is stored as H
            h, w = self.image_size
            object.__setattr__(self, "image_size", h if h == w else (h, w))
        if self.backbone is not None:
            object.__setattr__(self, "backbone", tuple(self.backbone))
        if min(*self.image_hw, self.patch_size, self.dim, self.depth, self.heads) < 1:
            raise ValueError("invalid ViTConfig: image_size, patch_size, dim, depth and heads "
                             "must be positive")  # fmt: skip
        problems = []
        if not fits(self.image_size, self.stride):
            stride = f"patch_size {self.patch_size}"
            if self.backbone is not None:
                backbone = self.stride // self.patch_size
                stride = f"{self.stride} (backbone stride {backbone} × {stride})"
            problems.append(f"image_size {self.image_size} is not a multiple of {stride}")
        if self.dim % self.heads:
            problems.append(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.backbone is not None and min((*self.backbone, self.backbone_width)) < 1:
            problems.append(f"backbone {self.backbone} × {self.backbone_width}: all must be ≥ 1")
        if self.backbone_std not in ("timm", "flax"):
            problems.append(f"backbone_std {self.backbone_std!r} is not 'timm' or 'flax'")
        if self.labels and len(self.labels) != self.num_classes:
            problems.append(f"{len(self.labels)} labels for {self.num_classes} classes")
        if not 0 < self.crop_pct <= 1:
            problems.append(f"crop_pct {self.crop_pct} is not in (0, 1]")
        if problems:
            raise ValueError("invalid ViTConfig: " + "; ".join(problems))

    @property
    def stride(self) -> int:
        """Input pixels per token side: the backbone's stride times the patch size."""
        return self.patch_size * (1 if self.backbone is None else backbone_stride(self.backbone))

    @property
    def embed_channels(self) -> int:
        """Channels the patch embedding reads: the image's, or the backbone feature map's."""
        if self.backbone is None:
            return self.channels
        return backbone_channels(self.backbone, self.backbone_width)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ViTConfig fields: {', '.join(unknown)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)


class PatchEmbed(nn.Module):
    """Split into P×P patches and project each to D: a conv with stride P is exactly x_p E.

    A hybrid first runs its ResNet, and the patches are cut from the feature map instead.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        p = config.patch_size
        self.backbone = ResNet(config) if config.backbone is not None else None
        self.proj = nn.Conv2d(config.embed_channels, config.dim, kernel_size=p, stride=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backbone is not None:
            x = self.backbone(x)  # (B, C', H/s, W/s)
        x = self.proj(x)  # (B, D, rows, cols)
        return x.flatten(2).transpose(1, 2)  # (B, N, D), row-major over the grid


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm's layout)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.dim, 3 * config.dim, bias=config.qkv_bias)
        self.proj = nn.Linear(config.dim, config.dim)

    def forward(
        self, x: torch.Tensor, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, N, D = x.shape
        # Split q, k, v before the head reshape: the same weights as timm's packed layout, but the
        # exported graph has no 5-D transpose, so ONNX Runtime's fusions match more of it.
        q, k, v = (
            t.reshape(B, N, self.heads, D // self.heads).transpose(1, 2)  # (B, H, N, D/H)
            for t in self.qkv(x).chunk(3, dim=-1)
        )
        if return_weights:
            # Explicit softmax so the weights exist; the fast path never materialises them.
            scores = q @ k.transpose(-2, -1) * (D // self.heads) ** -0.5  # (B, H, N, N)
            weights = scores.softmax(dim=-1)
            out = weights @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D/H)
        out = out.transpose(1, 2).reshape(B, N, D)
        return self.proj(out), weights


class MLP(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.dim, config.mlp_dim)
        self.act = nn.GELU(approximate="tanh" if config.gelu == "tanh" else "none")
        self.fc2 = nn.Linear(config.mlp_dim, config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LayerNorm encoder block: equations (2) and (3)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim, eps=config.eps)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.dim, eps=config.eps)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, weights = self.attn(self.norm1(x), return_weights)
        x = x + a  # (2)
        x = x + self.mlp(self.norm2(x))  # (3)
        return x, weights


@dataclass
class ViTOutput:
    logits: torch.Tensor  # (B, K)
    embedding: torch.Tensor  # (B, D): y, the [CLS] token after the final LayerNorm
    attentions: torch.Tensor | None = None  # (B, L, H, N+1, N+1) softmax weights, on request


class ViT(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, config.num_patches + 1, d) * 0.02)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=config.eps)
        r = config.representation_size
        self.pre_logits = nn.Linear(d, r) if r else None
        self.head = nn.Linear(r or d, config.num_classes) if config.num_classes else nn.Identity()
        self.apply(_init_timm)
        _init_fan_scaled(self)

    def forward(self, pixels: torch.Tensor, attention: bool = False) -> ViTOutput:
        x = self.patch_embed(pixels)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, N+1, D): equation (1)
        weights = []
        for block in self.blocks:
            x, w = block(x, return_weights=attention)
            weights.append(w)
        y = self.norm(x[:, 0])  # (B, D): equation (4); LN is per token, so norm only [CLS]
        feats = torch.tanh(self.pre_logits(y)) if self.pre_logits is not None else y
        return ViTOutput(
            logits=self.head(feats),
            embedding=y,
            attentions=torch.stack(weights, dim=1) if attention else None,  # (B, L, H, N+1, N+1)
        )

    def reset_head(self, num_classes: int, labels: tuple[str, ...] = ()) -> None:
        """The paper's fine-tuning head: drop head and pre-logits, attach a zero-initialised D×K."""
        self.config = replace(
            self.config, num_classes=num_classes, labels=labels, representation_size=None
        )
        self.pre_logits = None
        self.head = nn.Linear(self.config.dim, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def resize_grid(
        self, image_size: int | tuple[int, int], mode: PosEmbedResize = DEFAULT_POS_EMBED_RESIZE
    ) -> None:
        """Serve or fine-tune at a new resolution: interpolate the position embeddings in 2D."""
        new = replace(self.config, image_size=image_size)  # validates the stride multiple
        pos = resize_pos_embed(self.pos_embed.data, new.grid, mode, old_grid=self.config.grid)
        self.pos_embed = nn.Parameter(pos)
        self.config = new


def _init_timm(module: nn.Module) -> None:
    # timm's ViT init: truncated-normal linear weights, zero biases; LayerNorm stays (1, 0).
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _init_fan_scaled(vit: ViT) -> None:
    """The encoder as the paper's Flax code initialises it: weights scaled by their fan.

    timm's fixed std 0.02 is ≈ 0.55/√D at ViT-B's D = 768, but only 0.16/√D at D = 64: the
    residual branches start nearly silent and attention nearly uniform, and a small ViT trained
    from scratch then spends its first epoch leaving that saddle (Fashion-MNIST, D = 64: 27 %
    validation accuracy after 107 steps, against 40 % with this init). Attention and the patch
    embedding get LeCun normal (std 1/√fan_in, Flax's Dense default), the MLP Xavier uniform.
    """

    lecun = partial(nn.init.kaiming_normal_, nonlinearity="linear")  # std 1/√fan_in
    lecun(vit.patch_embed.proj.weight)
    nn.init.zeros_(vit.patch_embed.proj.bias)
    for block in vit.blocks:
        assert isinstance(block, Block)
        lecun(block.attn.qkv.weight)
        lecun(block.attn.proj.weight)
        nn.init.xavier_uniform_(block.mlp.fc1.weight)
        nn.init.xavier_uniform_(block.mlp.fc2.weight)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
