"""A ViT's sizes read from the shapes of a state dict in our names, for sources without a config.

timm files and bare HF weights record no config: the patch embedding (D, C, P, P), the position
embedding (1, 1 + g², D), the blocks and the head say everything but the head count, which comes
from the caller, a sidecar, or the paper's table (infer_heads). Raises ValueError like a mapping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from model_export.model import PRESETS, ViTConfig

# The paper's table maps width to heads; it breaks the D/64 rule at H (1280 -> 16, not 20).
_HEADS_BY_DIM = {dim: heads for dim, _, heads, _, _ in PRESETS.values()}
_NEEDED = ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight")


def config_from_shapes(
    state: Mapping[str, torch.Tensor], heads: int | None, **settings: Any
) -> ViTConfig:
    """ViTConfig from a mapped state's shapes; settings: what they cannot tell (eps, gelu, ...)."""
    if missing := [k for k in _NEEDED if k not in state]:
        raise ValueError(f"missing keys: {', '.join(missing)}")
    dim, channels, patch, patch_w = state["patch_embed.proj.weight"].shape  # (D, C, P, P)
    if patch != patch_w:
        raise ValueError(f"non-square patches {patch}×{patch_w} are unsupported")
    head, pre_logits = state.get("head.weight"), state.get("pre_logits.weight")
    return ViTConfig(
        image_size=grid(state["pos_embed"]) * patch,
        patch_size=patch,
        channels=channels,
        dim=dim,
        depth=len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
        heads=heads or infer_heads(dim),
        mlp_dim=state["blocks.0.mlp.fc1.weight"].shape[0],
        num_classes=0 if head is None else head.shape[0],
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        representation_size=None if pre_logits is None else pre_logits.shape[0],
        **settings,
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
    n = pos_embed.shape[1] - 1 if pos_embed is not None and pos_embed.ndim == 3 else 0
    if n < 1 or math.isqrt(n) ** 2 != n:
        shape = None if pos_embed is None else tuple(pos_embed.shape)
        raise ValueError(f"pos_embed {shape} is not (1, 1 + g², D) with the class position")
    return math.isqrt(n)
