"""A ViT's sizes read from the shapes of a state dict in our names, for sources without a config.

timm files and bare HF weights record no config: the patch embedding (D, C, P, P), the position
embedding (1, 1 + g², D), the blocks and the head say everything but the head count, which comes
from the caller, a sidecar, or the paper's table (infer_heads), and a non-square input size, which
only a sidecar can give. A hybrid's backbone (our names) gives its stage depths, width and the
image's channels (backbone_from_shapes). Raises ValueError like a mapping.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from model_export.model.presets import PRESETS
from model_export.model.resnet import STEM_WIDTH, backbone_stride
from model_export.model.vit import ViTConfig

# The paper's table maps width to heads; it breaks the D/64 rule at H (1280 -> 16, not 20).
_HEADS_BY_DIM = {dim: heads for dim, _, heads, _, _ in PRESETS.values()}
_NEEDED = ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight")
_STEM_CONV = "patch_embed.backbone.stem.conv.weight"  # (64·w, C, 7, 7)
_BLOCK = re.compile(r"^patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.")


def config_from_shapes(
    state: Mapping[str, torch.Tensor],
    heads: int | None,
    image_size: tuple[int, int] | None = None,
    **settings: Any,
) -> ViTConfig:
    """ViTConfig from a mapped state's shapes; settings: what they cannot tell (eps, gelu, ...).

    image_size: (H, W) from a sidecar; without one the grid must be square.
    """
    if missing := [k for k in _NEEDED if k not in state]:
        raise ValueError(f"missing keys: {', '.join(missing)}")
    dim, channels, patch, patch_w = state["patch_embed.proj.weight"].shape  # (D, C, P, P)
    if patch != patch_w:
        raise ValueError(f"non-square patches {patch}×{patch_w} are unsupported")
    hybrid = backbone_from_shapes(state)  # {} for a plain ViT
    stride = patch * (backbone_stride(hybrid["backbone"]) if hybrid else 1)
    head, pre_logits = state.get("head.weight"), state.get("pre_logits.weight")
    return ViTConfig(
        image_size=image_size or grid(state["pos_embed"]) * stride,
        patch_size=patch,
        channels=hybrid.pop("channels", channels),
        dim=dim,
        depth=len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
        heads=heads or infer_heads(dim),
        mlp_dim=state["blocks.0.mlp.fc1.weight"].shape[0],
        num_classes=0 if head is None else head.shape[0],
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        representation_size=None if pre_logits is None else pre_logits.shape[0],
        **hybrid,
        **settings,
    )


def backbone_from_shapes(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A hybrid's backbone (stage depths), width factor and image channels; {} for a plain ViT."""
    if _STEM_CONV not in state:
        return {}
    width, channels = state[_STEM_CONV].shape[:2]
    if width % STEM_WIDTH:
        raise ValueError(f"the stem conv has {width} channels, not a multiple of {STEM_WIDTH}")
    depths: dict[int, int] = {}
    for key in state:
        if m := _BLOCK.match(key):
            depths[int(m[1])] = max(depths.get(int(m[1]), 0), int(m[2]) + 1)
    if sorted(depths) != list(range(len(depths))):
        raise ValueError(f"backbone stages are not numbered 0..S-1 (found {sorted(depths)})")
    return dict(
        backbone=tuple(depths[i] for i in range(len(depths))),
        backbone_width=width // STEM_WIDTH,
        channels=channels,
    )


def infer_heads(dim: int) -> int:
    """Heads for a width: the paper's table where it applies, else the standard D/64 rule."""
    if dim in _HEADS_BY_DIM:
        return _HEADS_BY_DIM[dim]
    if dim % 64 == 0:
        return dim // 64
    raise ValueError(
        f"cannot infer the head count for width {dim} (not a paper size nor a multiple of 64); "
        "pass heads= or a sidecar config.json with model_args.num_heads"
    )


def grid(pos_embed: torch.Tensor | None) -> int:
    """g for a (1, 1 + g², D) position embedding: [CLS] first, then a square patch grid."""
    n = positions(pos_embed)
    if math.isqrt(n) ** 2 != n:
        assert pos_embed is not None
        raise ValueError(
            f"pos_embed {tuple(pos_embed.shape)} is not (1, 1 + g², D) with the class position: "
            f"{n} patch positions are no square grid, and only a config.json can give a "
            "non-square input size (timm: pretrained_cfg.input_size)"
        )
    return math.isqrt(n)


def positions(pos_embed: torch.Tensor | None) -> int:
    """N for a (1, 1 + N, D) position embedding: [CLS] first, then the patches."""
    n = pos_embed.shape[1] - 1 if pos_embed is not None and pos_embed.ndim == 3 else 0
    if n < 1:
        shape = None if pos_embed is None else tuple(pos_embed.shape)
        raise ValueError(f"pos_embed {shape} is not (1, 1 + N, D) with the class position")
    return n
