"""timm VisionTransformer checkpoints: the adapter, the key mapping, the config their shapes imply.

Detected by a folder's config.json ("architecture", timm's hub layout) or, for a lone weights
file, by a plain patch embedding in its keys (patch_embed.proj; a patch_embed.backbone is a hybrid,
not this adapter's). from_timm and timm_config are pure and raise ValueError on weights this ViT
cannot take; load reports that as a CheckpointError naming the file. timm's names are already ours:

    patch_embed.proj, cls_token, pos_embed, norm, head
    blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}

but for pre_logits.fc -> pre_logits. from_timm strips the `module.` (DataParallel/DDP) and
`_orig_mod.` (torch.compile) prefixes and refuses the variants this ViT does not compute (register
or distillation tokens, pooled heads, LayerScale, QK-norm). timm files do not record the head
count: timm_config takes it from the caller, the hub config.json's model_args, or infer_heads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

import torch

from model_export.formats.adapter import Adapter
from model_export.formats.base import State, reading, rgb
from model_export.formats.files import Checkpoint, Files
from model_export.formats.geometry import config_from_shapes, positions
from model_export.model.vit import Interpolation, ViTConfig

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
    sd = {strip_prefixes(k): v for k, v in state.items()}
    if "patch_embed.proj.weight" not in sd or not any(k.startswith("blocks.") for k in sd):
        first = ", ".join(list(sd)[:5])
        raise ValueError(f"not a ViT state dict: no patch_embed/blocks keys (has {first}, …)")
    for fragment, what in _TIMM_UNSUPPORTED.items():
        if any(fragment in k for k in sd):
            raise ValueError(f"unsupported timm ViT: it has {what}")
    if "cls_token" not in sd:
        raise ValueError("unsupported timm ViT: it has no class token (cls_token)")
    positions(sd.get("pos_embed"))  # square or not, the config decides with the input size
    return {k.replace("pre_logits.fc.", "pre_logits."): v for k, v in sd.items()}


def timm_config(
    state: Mapping[str, torch.Tensor],
    heads: int | None,
    sidecar: Mapping[str, Any],
    **settings: Any,
) -> ViTConfig:
    """ViTConfig from a mapped state's shapes; heads from the argument, sidecar or paper's table.

    settings: what the caller knows beyond timm's ViT defaults (a hybrid's backbone numerics).
    """
    if sidecar.get("global_pool", "token") != "token":
        raise ValueError(f"unsupported timm global_pool {sidecar['global_pool']!r}")
    return config_from_shapes(
        state,
        heads or sidecar.get("model_args", {}).get("num_heads"),
        image_size=_input_size(sidecar),
        eps=1e-6,
        gelu="erf",
        labels=tuple(sidecar.get("label_names") or ()),
        **_timm_preprocess(sidecar),
        **settings,
    )


def _input_size(sidecar: Mapping[str, Any]) -> tuple[int, int] | None:
    """(H, W) from model_args.img_size (an int or [H, W]) or pretrained_cfg.input_size [C, H, W]."""
    args, pretrained = sidecar.get("model_args") or {}, sidecar.get("pretrained_cfg") or {}
    if "img_size" in args:
        size = args["img_size"]
    elif isinstance(pretrained.get("input_size"), list):
        size = pretrained["input_size"][1:]
    else:
        return None
    if isinstance(size, int):
        size = [size, size]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) for s in size)):
        raise ValueError(f"timm input size {size!r} is not [H, W] in pixels")
    return size[0], size[1]


def _timm_preprocess(sidecar: Mapping[str, Any]) -> dict[str, Any]:
    cfg = {**_TIMM_PREPROCESS, **(sidecar.get("pretrained_cfg") or {})}
    if cfg["crop_mode"] not in _TIMM_CROP_MODES:
        raise ValueError(f"timm crop_mode {cfg['crop_mode']!r} is unsupported")
    if cfg["interpolation"] not in get_args(Interpolation):
        raise ValueError(f"timm interpolation {cfg['interpolation']!r} is unsupported")
    return dict(
        mean=rgb(cfg["mean"], "pretrained_cfg.mean"),
        std=rgb(cfg["std"], "pretrained_cfg.std"),
        interpolation=cfg["interpolation"],
        resize_mode=_TIMM_CROP_MODES[cfg["crop_mode"]],
        crop_pct=cfg["crop_pct"],
    )


def strip_prefixes(key: str) -> str:
    while key.startswith(_PREFIXES):
        key = key.split(".", 1)[1]
    return key


# --- the adapter ---------------------------------------------------------------------------------


def detect(keys: frozenset[str], files: Files) -> bool:
    stripped = {strip_prefixes(k) for k in keys}
    if any(k.startswith("patch_embed.backbone.") for k in stripped):
        return False  # a hybrid ResNet + ViT
    if files.is_folder:
        return "architecture" in files.config
    return "patch_embed.proj.weight" in stripped


def load(checkpoint: Checkpoint, heads: int | None) -> tuple[ViTConfig, State]:
    files = checkpoint.files
    # A config.json that is not timm's (no "architecture") says nothing about a timm file.
    sidecar = files.config if "architecture" in files.config else {}
    state = reading(files.weights or files.path, from_timm, checkpoint.tensors())
    return reading(files.path, timm_config, state, heads, sidecar), state


ADAPTER = Adapter("timm", detect, load)
