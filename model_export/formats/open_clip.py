"""open_clip (and OpenAI CLIP) image towers: the adapter and the key mapping.

Detected by `visual.transformer.resblocks.` keys: an open_clip hub folder (open_clip_config.json
beside open_clip_model.safetensors or open_clip_pytorch_model.bin) or a lone state-dict file, the
text tower beside it or not. OpenAI's CLIP state dicts use the same names. Under `visual.`:

    conv1 (no bias)                              -> patch_embed.proj
    class_embedding (D,), positional_embedding (T, D) -> cls_token (1, 1, D), pos_embed (1, T, D)
    ln_pre, ln_post                              -> norm_pre, norm
    proj (D, E), applied as x @ proj             -> proj.weight (E, D)
    transformer.resblocks.N.
        ln_1, ln_2                               -> blocks.N.norm1, norm2
        attn.in_proj_{weight,bias} (q, k, v)     -> blocks.N.attn.qkv (the same packing)
        attn.out_proj                            -> blocks.N.attn.proj
        mlp.c_fc, mlp.c_proj                     -> blocks.N.mlp.fc1, fc2
        ls_1.gamma, ls_2.gamma                   -> blocks.N.ls1.gamma, ls2.gamma

Every key outside `visual.` (the text tower, logit_scale) is dropped. /embed publishes what
CLIP's encode_image(normalize=True) returns: the projected class token after ln_post,
L2-normalised. The activation is not in the weights: open_clip_config.json's model_cfg.quick_gelu
says it (OpenAI's weights were trained with QuickGELU, open_clip's own mostly with GELU); a lone
file without that config is read with open_clip's default, exact GELU.
"""

from __future__ import annotations

import re
from typing import Any

from model_export.formats.adapter import Adapter, Hints
from model_export.formats.base import State, reading, rgb
from model_export.formats.files import OPEN_CLIP_CONFIG, Checkpoint, Files
from model_export.formats.geometry import config_from_shapes
from model_export.model.vit import ViTConfig

_VISUAL = "visual."
_TOP = {
    "conv1.weight": "patch_embed.proj.weight",
    "class_embedding": "cls_token",
    "positional_embedding": "pos_embed",
    "ln_pre.weight": "norm_pre.weight",
    "ln_pre.bias": "norm_pre.bias",
    "ln_post.weight": "norm.weight",
    "ln_post.bias": "norm.bias",
    "proj": "proj.weight",
}
_BLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_BLOCK_NAMES = {
    "ln_1.weight": "norm1.weight",
    "ln_1.bias": "norm1.bias",
    "attn.in_proj_weight": "attn.qkv.weight",
    "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.weight": "attn.proj.weight",
    "attn.out_proj.bias": "attn.proj.bias",
    "ls_1.gamma": "ls1.gamma",
    "ln_2.weight": "norm2.weight",
    "ln_2.bias": "norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
    "ls_2.gamma": "ls2.gamma",
}
_PREFIXES = ("module.", "_orig_mod.")  # open_clip's training checkpoints: DDP, torch.compile
# open_clip's preprocessing defaults: OpenAI's statistics, bicubic, shorter side then centre crop.
_PREPROCESS: dict[str, Any] = dict(
    mean=(0.48145466, 0.4578275, 0.40821073),
    std=(0.26862954, 0.26130258, 0.27577711),
    interpolation="bicubic",
    resize_mode="shortest",
)
_RESIZE_MODES = {"shortest": "crop", "squash": "squash"}


def from_open_clip(state: State) -> State:
    """open_clip's visual tower -> ours (module docstring); everything else is dropped."""
    out: State = {}
    unknown = []
    for key, tensor in state.items():
        name = key
        while name.startswith(_PREFIXES):
            name = name.split(".", 1)[1]
        if not name.startswith(_VISUAL):
            continue  # the text tower, logit_scale
        name = name.removeprefix(_VISUAL)
        block = _BLOCK.fullmatch(name)
        if name in _TOP:
            out[_TOP[name]] = tensor
        elif block and block[2] in _BLOCK_NAMES:
            out[f"blocks.{block[1]}.{_BLOCK_NAMES[block[2]]}"] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            "unsupported open_clip image tower (only the plain ViT of CLIP loads here, not an "
            f"attention-pooled, timm-trunk or scaled-norm one): {', '.join(unknown[:4])}, …"
        )
    if "cls_token" not in out or "pos_embed" not in out:
        raise ValueError("not an open_clip ViT: no visual.class_embedding/positional_embedding")
    out["cls_token"] = out["cls_token"].reshape(1, 1, -1)  # (D,) -> (1, 1, D)
    out["pos_embed"] = out["pos_embed"].unsqueeze(0)  # (T, D) -> (1, T, D)
    if "proj.weight" in out:
        out["proj.weight"] = out["proj.weight"].T.contiguous()  # x @ (D, E) is Linear (E, D)
    return out


def open_clip_config(state: State, sidecar: dict[str, Any], hints: Hints) -> ViTConfig:
    """ViTConfig from the shapes and open_clip_config.json (model_cfg, preprocess_cfg)."""
    model = sidecar.get("model_cfg") or {}
    vision = model.get("vision_cfg") or {}
    dim = state["patch_embed.proj.weight"].shape[0]
    heads = dim // vision["head_width"] if "head_width" in vision else hints.heads
    p = {**_PREPROCESS, **(sidecar.get("preprocess_cfg") or {})}
    if p["resize_mode"] not in _RESIZE_MODES:
        raise ValueError(f"open_clip resize_mode {p['resize_mode']!r} is unsupported")
    return config_from_shapes(
        state,
        heads,
        grid=hints.grid,
        eps=1e-5,  # open_clip's LayerNorm: torch's default
        gelu="quick_gelu" if model.get("quick_gelu") else "erf",
        mean=rgb(p["mean"], "preprocess_cfg.mean"),
        std=rgb(p["std"], "preprocess_cfg.std"),
        interpolation=p["interpolation"],
        resize_mode=_RESIZE_MODES[p["resize_mode"]],
        pos_embed_resize="bicubic-antialias",  # open_clip's resize_pos_embed
    )


def detect(keys: frozenset[str], files: Files) -> bool:
    return any("visual.transformer.resblocks." in k for k in keys)


def load(checkpoint: Checkpoint, hints: Hints) -> tuple[ViTConfig, State]:
    files = checkpoint.files
    state = reading(files.weights or files.path, from_open_clip, checkpoint.tensors())
    sidecar = files.json(OPEN_CLIP_CONFIG)
    return reading(files.path, open_clip_config, state, sidecar, hints), state


ADAPTER = Adapter("open-clip", detect, load)
