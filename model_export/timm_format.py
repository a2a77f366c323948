"""timm VisionTransformer checkpoints: the key mapping and the config their shapes imply.

Both functions are pure and raise ValueError on weights this ViT cannot take; load_checkpoint
reports that as a CheckpointError naming the file. timm's names are already ours:

    patch_embed.proj, cls_token, pos_embed, norm, head
    blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}

but for pre_logits.fc -> pre_logits. from_timm strips the `module.` (DataParallel/DDP) and
`_orig_mod.` (torch.compile) prefixes and refuses the variants this ViT does not compute (register
or distillation tokens, pooled heads, LayerScale, QK-norm). timm files do not record the head
count: timm_config takes it from the caller, the hub config.json's model_args, or infer_heads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, get_args

import torch

from model_export.hf import _hf_preprocess, _rgb
from model_export.model import PRESETS, Interpolation, ViTConfig

# VisionTransformer variants this ViT does not compute, by a key fragment that gives them away.
_TIMM_UNSUPPORTED = {
    "reg_token": "register tokens (extra prefix tokens)",
    "dist_token": "a distillation token (an extra prefix token)",
    "fc_norm": "a global-average-pool head (fc_norm)",
    "attn_pool": "an attention-pool head",
    "norm_pre": "a pre-encoder norm (CLIP style)",
    ".ls1.": "LayerScale",
    ".q_norm.": "QK-norm",
}
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers
# The paper's table maps width to heads; it breaks the D/64 rule at H (1280 -> 16, not 20).
_HEADS_BY_DIM = {dim: heads for dim, _, heads, _, _ in PRESETS.values()}
_TIMM_PREPROCESS: dict[str, Any] = dict(  # timm's vision_transformer _cfg defaults
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    interpolation="bicubic",
    crop_mode="center",  # resize the shorter side to size / crop_pct, then centre-crop
    crop_pct=0.9,
)
_TIMM_CROP_MODES = {"center": "crop", "squash": "squash"}


def from_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm VisionTransformer -> ours: the names already match but for pre_logits.fc."""
    sd = {_strip_prefixes(k): v for k, v in state.items()}
    if "patch_embed.proj.weight" not in sd or not any(k.startswith("blocks.") for k in sd):
        first = ", ".join(list(sd)[:5])
        raise ValueError(f"not a ViT state dict: no patch_embed/blocks keys (has {first}, …)")
    for fragment, what in _TIMM_UNSUPPORTED.items():
        if any(fragment in k for k in sd):
            raise ValueError(f"unsupported timm ViT: it has {what}")
    if "cls_token" not in sd:
        raise ValueError("unsupported timm ViT: it has no class token (cls_token)")
    _grid(sd.get("pos_embed"))
    return {k.replace("pre_logits.fc.", "pre_logits."): v for k, v in sd.items()}


def timm_config(
    state: Mapping[str, torch.Tensor],
    heads: int | None,
    sidecar: Mapping[str, Any],
    hf_defaults: bool = False,
) -> ViTConfig:
    """ViTConfig from a mapped state's shapes; heads from the argument, sidecar or paper's table.

    hf_defaults: the state came from a HF file with no config.json, so transformers' defaults
    (eps 1e-12, ViTImageProcessor preprocessing) apply rather than timm's.
    """
    if sidecar.get("global_pool", "token") != "token":
        raise ValueError(f"unsupported timm global_pool {sidecar['global_pool']!r}")
    needed = ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight")
    if missing := [k for k in needed if k not in state]:
        raise ValueError(f"missing keys: {', '.join(missing)}")
    dim, channels, patch, patch_w = state["patch_embed.proj.weight"].shape  # (D, C, P, P)
    if patch != patch_w:
        raise ValueError(f"non-square patches {patch}×{patch_w} are unsupported")
    head, pre_logits = state.get("head.weight"), state.get("pre_logits.weight")
    return ViTConfig(
        image_size=_grid(state["pos_embed"]) * patch,
        patch_size=patch,
        channels=channels,
        dim=dim,
        depth=len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
        heads=heads or sidecar.get("model_args", {}).get("num_heads") or infer_heads(dim),
        mlp_dim=state["blocks.0.mlp.fc1.weight"].shape[0],
        num_classes=0 if head is None else head.shape[0],
        eps=1e-12 if hf_defaults else 1e-6,
        gelu="erf",
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        representation_size=None if pre_logits is None else pre_logits.shape[0],
        labels=tuple(sidecar.get("label_names") or ()),
        **(_hf_preprocess({}) if hf_defaults else _timm_preprocess(sidecar)),
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


def _timm_preprocess(sidecar: Mapping[str, Any]) -> dict[str, Any]:
    cfg = {**_TIMM_PREPROCESS, **(sidecar.get("pretrained_cfg") or {})}
    if cfg["crop_mode"] not in _TIMM_CROP_MODES:
        raise ValueError(f"timm crop_mode {cfg['crop_mode']!r} is unsupported")
    if cfg["interpolation"] not in get_args(Interpolation):
        raise ValueError(f"timm interpolation {cfg['interpolation']!r} is unsupported")
    return dict(
        mean=_rgb(cfg["mean"], "pretrained_cfg.mean"),
        std=_rgb(cfg["std"], "pretrained_cfg.std"),
        interpolation=cfg["interpolation"],
        resize_mode=_TIMM_CROP_MODES[cfg["crop_mode"]],
        crop_pct=cfg["crop_pct"],
    )


def _grid(pos_embed: torch.Tensor | None) -> int:
    """g for a (1, 1 + g², D) position embedding: [CLS] first, then a square patch grid."""
    n = pos_embed.shape[1] - 1 if pos_embed is not None and pos_embed.ndim == 3 else 0
    if n < 1 or math.isqrt(n) ** 2 != n:
        shape = None if pos_embed is None else tuple(pos_embed.shape)
        raise ValueError(f"pos_embed {shape} is not (1, 1 + g², D) with the class position")
    return math.isqrt(n)


def _strip_prefixes(key: str) -> str:
    while key.startswith(_PREFIXES):
        key = key.split(".", 1)[1]
    return key
