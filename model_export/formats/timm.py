"""timm VisionTransformer checkpoints: the adapter, the key mapping, the config their shapes imply.

Detected by a folder's config.json ("architecture", timm's hub layout) or, for a lone weights
file, by a plain patch embedding in its keys (patch_embed.proj; a patch_embed.backbone is a hybrid,
not this adapter's). from_timm and timm_config are pure and raise ValueError on weights this ViT
cannot take; load reports that as a CheckpointError naming the file. timm's names are already ours:

    patch_embed.proj, cls_token, pos_embed, norm, head
    blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}

and so are its family variants, which the keys give away (geometry.family_from_shapes): DeiT's
dist_token and head_dist, DINOv2's reg_token, blocks.N.ls{1,2}.gamma and packed SwiGLU fc1,
CLIP's norm_pre and bias-less patch embedding, SigLIP's attn_pool (no cls_token). Three things
differ: pre_logits.fc -> pre_logits; the position rows of the tokens before the patches, which
timm lays out two ways (_prefix_positions); and a CLIP tower's projection, which timm keeps as
its head with a zero bias, becomes our projection (proj). from_timm strips the `module.`
(DataParallel/DDP) and `_orig_mod.` (torch.compile) prefixes and refuses the variants this ViT
does not compute (average pooling, QK-norm). timm's attention-pool head reads the patch tokens
alone, as ours does (its pool_include_prefix=False default).

What the weights cannot say comes from timm's architecture defaults and the hub config.json: the
head count (the caller, model_args, or infer_heads), LayerNorm eps (1e-5 for CLIP towers, 1e-6
otherwise), QuickGELU (only the `_quickgelu_` architectures: the trait is in the name).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, get_args

import torch

from model_export.formats.adapter import Adapter, Grid, Hints
from model_export.formats.base import State, reading, rgb
from model_export.formats.files import Checkpoint, Files
from model_export.formats.geometry import config_from_shapes, positions
from model_export.model.vit import Interpolation, ViTConfig

# VisionTransformer variants this ViT does not compute, by a key fragment that gives them away.
_TIMM_UNSUPPORTED = {
    "fc_norm": "a global-average-pool head (fc_norm)",
    ".q_norm.": "QK-norm",
    "attn_pool.pos_embed": "an attention-pool head with its own position embedding",
    "mlp.norm.": "a normalised MLP (scale_mlp_norm)",
    "attn.norm.": "a normalised attention output (scale_attn_norm)",
}
_POOLS = {"token": "cls", "map": "map"}  # timm global_pool -> what our head reads
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers
_TIMM_PREPROCESS: dict[str, Any] = dict(  # timm's vision_transformer _cfg defaults
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    interpolation="bicubic",
    crop_mode="center",  # resize the shorter side to size / crop_pct, then centre-crop
    crop_pct=0.9,
)
_TIMM_CROP_MODES = {"center": "crop", "squash": "squash"}
CLIP_EPS = 1e-5  # timm's CLIP towers: norm_layer=partial(LayerNorm, eps=1e-5), as OpenAI's


def from_timm(state: Mapping[str, torch.Tensor], patches: int | None = None) -> State:
    """timm VisionTransformer -> ours (module docstring). patches: how many patch tokens the
    model has, when the caller knows (a sidecar's input size, --grid)."""
    sd = {strip_prefixes(k): v for k, v in state.items()}
    if "patch_embed.proj.weight" not in sd or not any(k.startswith("blocks.") for k in sd):
        first = ", ".join(list(sd)[:5])
        raise ValueError(f"not a ViT state dict: no patch_embed/blocks keys (has {first}, …)")
    for fragment, what in _TIMM_UNSUPPORTED.items():
        if any(fragment in k for k in sd):
            raise ValueError(f"unsupported timm ViT: it has {what}")
    if "cls_token" not in sd and "attn_pool.latent" not in sd:
        raise ValueError(
            "unsupported timm ViT: no class token and no attention-pool head (average pooling)"
        )
    if "attn_pool.latent" in sd and sd["attn_pool.latent"].shape[1] != 1:
        raise ValueError("unsupported timm ViT: its attention pool has several latent queries")
    if "attn_pool.latent" in sd and "attn_pool.q.weight" not in sd:
        raise ValueError("unsupported timm ViT: its attention pool has no query projection")
    sd = {k.replace("pre_logits.fc.", "pre_logits."): v for k, v in sd.items()}
    return _clip_projection(_prefix_positions(sd, patches))


def _prefix_positions(sd: State, patches: int | None) -> State:
    """timm's pos_embed -> ours, which has rows for the class and distillation tokens (C) and
    none for registers (R), as DINOv2's own code and transformers lay them out (C + N rows).

    timm has two layouts: every prefix token positioned (C + R + N rows, its default), or none
    (N rows: no_embed_class, as in DINOv2 with registers and DeiT III). A register's position is
    a constant added to a constant, so it folds into the register token; a class token with none
    gets a zero row, which adds nothing. Without `patches` the layout is timm's default unless
    only no_embed_class makes a square grid of a model with registers.
    """
    c = int("cls_token" in sd) + int("dist_token" in sd)
    reg = sd.get("reg_token")
    r = 0 if reg is None else reg.shape[1]
    n = positions(sd.get("pos_embed"), 0)
    if patches is None:
        no_embed_class = r > 0 and _square(n) and not _square(n - c - r)
        patches = n if no_embed_class else n - c - r
    pos = sd["pos_embed"]
    if n == c + patches:  # ours already
        return sd
    if n == patches:  # no_embed_class
        return {**sd, "pos_embed": torch.cat([pos.new_zeros(1, c, pos.shape[-1]), pos], dim=1)}
    if n != c + r + patches:
        raise ValueError(f"pos_embed {tuple(pos.shape)} does not fit {patches} patches")
    assert reg is not None
    return {
        **sd,
        "reg_token": reg + pos[:, c : c + r],
        "pos_embed": torch.cat([pos[:, :c], pos[:, c + r :]], dim=1),
    }


def _square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def _clip_projection(sd: State) -> State:
    """A CLIP tower (norm_pre) keeps its image projection as timm's head, with the zero bias
    timm's converter writes: ours is a projection, not a classifier. A non-zero bias is a
    classifier fine-tuned on the tower (the *_ft_in1k weights) and stays one."""
    bias = sd.get("head.bias")
    if "norm_pre.weight" not in sd or "head.weight" not in sd or (bias is not None and bias.any()):
        return sd
    out = {k: v for k, v in sd.items() if k not in ("head.weight", "head.bias")}
    out["proj.weight"] = sd["head.weight"]  # (E, D)
    return out


def timm_config(
    state: Mapping[str, torch.Tensor],
    hints: Hints,
    sidecar: Mapping[str, Any],
    **settings: Any,
) -> ViTConfig:
    """ViTConfig from a mapped state's shapes; heads from the hints, sidecar or paper's table.

    settings: what the caller knows beyond timm's ViT defaults (a hybrid's backbone numerics).
    """
    pool = sidecar.get("global_pool", "map" if "attn_pool.latent" in state else "token")
    if pool not in _POOLS or (_POOLS[pool] == "map") != ("attn_pool.latent" in state):
        raise ValueError(f"unsupported timm global_pool {pool!r} for these weights")
    args = sidecar.get("model_args") or {}
    quick = "quickgelu" in str(sidecar.get("architecture")) or args.get("act_layer") == "quick_gelu"
    return config_from_shapes(
        state,
        hints.heads or args.get("num_heads"),
        image_size=_input_size(sidecar),
        grid=hints.grid,
        eps=CLIP_EPS if "norm_pre.weight" in state else 1e-6,
        gelu="quick_gelu" if quick else "erf",
        labels=tuple(sidecar.get("label_names") or ()) if "head.weight" in state else (),
        **{**_timm_preprocess(sidecar), **settings},
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


def patch_count(
    state: Mapping[str, torch.Tensor], size: Grid | None, grid: Grid | None
) -> int | None:
    """How many patch tokens a plain timm ViT has, when the caller or the sidecar says."""
    if grid is not None:
        return grid[0] * grid[1]
    p = state["patch_embed.proj.weight"].shape[-1] if "patch_embed.proj.weight" in state else 0
    if size is None or not p or any(k.startswith("patch_embed.backbone.") for k in state):
        return None  # a hybrid's stride is its backbone's business; its pos_embed has [CLS]
    return (size[0] // p) * (size[1] // p)


def detect(keys: frozenset[str], files: Files) -> bool:
    stripped = {strip_prefixes(k) for k in keys}
    if any(k.startswith("patch_embed.backbone.") for k in stripped):
        return False  # a hybrid ResNet + ViT
    if "mask_token" in stripped:
        return False  # the original DINOv2 code's checkpoint (dinov2.py)
    if files.is_folder:
        return "architecture" in files.config
    return "patch_embed.proj.weight" in stripped


def load(checkpoint: Checkpoint, hints: Hints) -> tuple[ViTConfig, State]:
    files = checkpoint.files
    # A config.json that is not timm's (no "architecture") says nothing about a timm file.
    sidecar = files.config if "architecture" in files.config else {}
    tensors = {strip_prefixes(k): v for k, v in checkpoint.tensors().items()}
    size = reading(files.path, _input_size, sidecar)
    patches = patch_count(tensors, size, hints.grid)
    state = reading(files.weights or files.path, from_timm, tensors, patches)
    return reading(files.path, timm_config, state, hints, sidecar), state


ADAPTER = Adapter("timm", detect, load)
