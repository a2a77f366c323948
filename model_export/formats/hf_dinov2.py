"""transformers DINOv2 checkpoints (Dinov2Model, Dinov2WithRegistersModel and their
…ForImageClassification): the adapter and the key mapping.

Detected by a folder's config.json (model_type "dinov2" or "dinov2_with_registers") or a lone
file's LayerScale keys. The encoder layers in 4.x or 5.x names (hf.py): norm{1,2},
attention.{attention.query…,q_proj…}, layer_scale{1,2}.lambda1 -> ls{1,2}.gamma, and the MLP as
mlp.fc{1,2}, or SwiGLU as mlp.weights_{in,out} (4.x) or mlp.{gate,up,down}_proj (5.x). The rest,
with or without the `dinov2.` / `dinov2_with_registers.` prefix:

    embeddings.{cls_token,register_tokens,position_embeddings}  -> cls_token, reg_token, pos_embed
    embeddings.patch_embeddings.projection, layernorm           -> patch_embed.proj, norm
    classifier (…ForImageClassification: [class token; patch mean], 2·D wide) -> head

Its embedding is the class token after the final LayerNorm (pooler_output); a classification
checkpoint publishes what its classifier reads, the class token concatenated with the mean of the
patch tokens (registers excluded). The positions cover 518 px (37 × 37 at patch 14) and the
processor feeds 224 px: transformers interpolates them on every call, bicubic (Dinov2Model) or
bicubic with antialiasing (Dinov2WithRegistersModel); this adapter does so once, at load.
"""

from __future__ import annotations

from typing import Any

from model_export.formats.adapter import Adapter, Hints
from model_export.formats.base import State, reading
from model_export.formats.files import Checkpoint, Files
from model_export.formats.hf import HF_TOP, Family, family_config, from_transformers
from model_export.model.vit import ViTConfig

_TOP = {**HF_TOP, "embeddings.register_tokens": "reg_token"}
_IGNORED = ("embeddings.mask_token",)  # masked-image pre-training only
_PREFIXES = ("dinov2_with_registers.", "dinov2.")
_CONFIG = dict(num_attention_heads=12, hidden_act="gelu", layer_norm_eps=1e-6)
_PROCESSOR = dict(  # BitImageProcessor as DINOv2 configures it: 256, centre crop 224, ImageNet
    size={"shortest_edge": 256},
    crop_size={"height": 224, "width": 224},
    do_center_crop=True,
    resample=3,
    image_mean=(0.485, 0.456, 0.406),
    image_std=(0.229, 0.224, 0.225),
)
FAMILIES = {  # the two classes interpolate their position embeddings differently
    "dinov2": Family(("dinov2",), _CONFIG, _PROCESSOR, "bicubic"),
    "dinov2_with_registers": Family(
        ("dinov2_with_registers",), _CONFIG, _PROCESSOR, "bicubic-antialias"
    ),
}


def from_hf_dinov2(state: State) -> State:
    return from_transformers(state, _TOP, _IGNORED, _PREFIXES, "transformers DINOv2")


def dinov2_config(state: State, files: Files, hints: Hints) -> tuple[ViTConfig, State]:
    model_type = files.config.get("model_type")
    if model_type not in FAMILIES:  # a lone file: its registers say which class wrote it
        model_type = "dinov2_with_registers" if "reg_token" in state else "dinov2"
    settings: dict[str, Any] = {}
    if "head.weight" in state:  # …ForImageClassification's linear head reads [cls; patch mean]
        settings["pool"] = "cls_mean"
    return family_config(state, files, FAMILIES[model_type], hints, **settings)


def detect(keys: frozenset[str], files: Files) -> bool:
    if files.is_folder:
        return files.config.get("model_type") in FAMILIES
    return any(".layer_scale1.lambda1" in k for k in keys)


def load(checkpoint: Checkpoint, hints: Hints) -> tuple[ViTConfig, State]:
    files = checkpoint.files
    state = reading(files.weights or files.path, from_hf_dinov2, checkpoint.tensors())
    return reading(files.path, dinov2_config, state, files, hints)


ADAPTER = Adapter("hf-dinov2", detect, load)
