"""A ViT's sizes and variants read from the shapes of a state dict in our names, for sources
without a config.

timm files and bare HF weights record no config: the patch embedding (D, C, P, P), the position
embedding (1, P + N, D), the blocks and the head say everything but the head count, which comes
from the caller, a sidecar, or the paper's table (infer_heads), and a non-square input size, which
only a sidecar or the caller (--grid) can give. Which family variants a state dict holds is in
its names (family_from_shapes: a distillation token, registers, LayerScale, a SwiGLU MLP, an
attention-pooling head, a projection). A hybrid's backbone (our names) gives its stage depths,
width and the image's channels (backbone_from_shapes). Raises ValueError like a mapping.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from model_export.model.pos_embed import resize_pos_embed
from model_export.model.presets import PRESETS
from model_export.model.resnet import STEM_WIDTH, backbone_stride
from model_export.model.vit import ViTConfig

# The paper's table maps width to heads; it breaks the D/64 rule at H (1280 -> 16, not 20).
_HEADS_BY_DIM = {dim: heads for dim, _, heads, _, _ in PRESETS.values()}
_NEEDED = ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight")
_STEM_CONV = "patch_embed.backbone.stem.conv.weight"  # (64·w, C, 7, 7)
_BLOCK = re.compile(r"^patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.")
GRID_HINT = (
    "say it with --grid RxC (rows x columns of tokens), grid=(rows, cols), or a config.json "
    "(timm: pretrained_cfg.input_size)"
)


def config_from_shapes(
    state: Mapping[str, torch.Tensor],
    heads: int | None,
    image_size: tuple[int, int] | None = None,
    grid: tuple[int, int] | None = None,
    **settings: Any,
) -> ViTConfig:
    """ViTConfig from a mapped state's shapes; settings: what they cannot tell (eps, gelu, ...).

    image_size: (H, W) from a sidecar; grid: (rows, cols) of tokens from the caller. Without
    either the grid must be square.
    """
    if missing := [k for k in _NEEDED if k not in state]:
        raise ValueError(f"missing keys: {', '.join(missing)}")
    dim, channels, patch, patch_w = state["patch_embed.proj.weight"].shape  # (D, C, P, P)
    if patch != patch_w:
        raise ValueError(f"non-square patches {patch}×{patch_w} are unsupported")
    hybrid = backbone_from_shapes(state)  # {} for a plain ViT
    family = family_from_shapes(state)
    stride = patch * (backbone_stride(hybrid["backbone"]) if hybrid else 1)
    pos_tokens = int(family["class_token"]) + int(family["distill_token"])
    if image_size is None:
        rows, cols = grid or token_grid(state["pos_embed"], pos_tokens)
        image_size = (rows * stride, cols * stride)
    head, pre_logits = state.get("head.weight"), state.get("pre_logits.weight")
    return ViTConfig(
        image_size=image_size,
        patch_size=patch,
        channels=hybrid.pop("channels", channels),
        dim=dim,
        depth=len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
        heads=heads or infer_heads(dim),
        mlp_dim=state["blocks.0.mlp.fc2.weight"].shape[1],
        num_classes=0 if head is None else head.shape[0],
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        representation_size=None if pre_logits is None else pre_logits.shape[0],
        **hybrid,
        **{**family, **settings},
    )


def at_size(
    config: ViTConfig, state: Mapping[str, torch.Tensor], size: int | None
) -> tuple[ViTConfig, dict[str, torch.Tensor]]:
    """config and state moved to an S×S input: position embeddings resampled the family's way
    (config.pos_embed_resize); as they are for None or the size they already have."""
    if size is None or (size, size) == config.image_hw:
        return config, dict(state)
    new = replace(config, image_size=size)  # ValueError if size is no multiple of the stride
    pos = resize_pos_embed(
        state["pos_embed"], new.grid, config.pos_embed_resize, config.grid, config.pos_tokens
    )
    return new, {**state, "pos_embed": pos}


def family_from_shapes(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The family variants a state dict in our names holds (ViTConfig fields)."""
    fc1, fc2 = state["blocks.0.mlp.fc1.weight"], state["blocks.0.mlp.fc2.weight"]
    reg, proj = state.get("reg_token"), state.get("proj.weight")
    pool = "map" if "attn_pool.latent" in state else "cls"
    if "dist_token" in state:
        pool = "cls_dist"  # DeiT: what the head reads is the mean of its two tokens
    return dict(
        class_token="cls_token" in state,
        distill_token="dist_token" in state,
        distill_head="head_dist.weight" in state,
        register_tokens=0 if reg is None else reg.shape[1],
        # the gammas come with the weights; the init is what timm's DINOv2 starts them at
        layer_scale=1e-5 if "blocks.0.ls1.gamma" in state else None,
        mlp="swiglu" if fc1.shape[0] == 2 * fc2.shape[1] else "gelu",
        patch_bias="patch_embed.proj.bias" in state,
        pre_norm="norm_pre.weight" in state,
        pool=pool,
        projection_dim=None if proj is None else proj.shape[0],
        normalize=proj is not None,  # a projection is CLIP's, compared by cosine
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


def token_grid(pos_embed: torch.Tensor | None, prefix: int = 1) -> tuple[int, int]:
    """(g, g) for a (1, prefix + g², D) position embedding: the prefix positions ([CLS], DeiT's
    [DIST]) first, then a square patch grid."""
    n = positions(pos_embed, prefix)
    if math.isqrt(n) ** 2 != n:
        assert pos_embed is not None
        raise ValueError(
            f"pos_embed {tuple(pos_embed.shape)}: its {n} patch positions are no square grid, "
            f"and the file does not record the grid; {GRID_HINT}"
        )
    return math.isqrt(n), math.isqrt(n)


def positions(pos_embed: torch.Tensor | None, prefix: int = 1) -> int:
    """N for a (1, prefix + N, D) position embedding: the prefix positions first, then patches."""
    n = pos_embed.shape[1] - prefix if pos_embed is not None and pos_embed.ndim == 3 else 0
    if n < 1:
        shape = None if pos_embed is None else tuple(pos_embed.shape)
        raise ValueError(f"pos_embed {shape} is not (1, {prefix} + N, D)")
    return n
