"""transformers DeiT checkpoints (DeiTForImageClassificationWithTeacher, …ForImageClassification,
DeiTModel): the adapter and the key mapping.

Detected by a folder's config.json (model_type "deit") or a lone file's `deit.` keys. The encoder
layers are ViT's, in 4.x or 5.x names (hf.py); the rest, with or without the `deit.` prefix:

    embeddings.{cls_token,distillation_token,position_embeddings}  -> cls_token, dist_token,
                                                                      pos_embed (1, 2 + N, D)
    embeddings.patch_embeddings.projection, layernorm              -> patch_embed.proj, norm
    cls_classifier, distillation_classifier                        -> head, head_dist
    classifier (DeiTForImageClassification: the class token alone) -> head

The distilled classifier is the mean of its two heads; what it publishes as its embedding is the
mean of the two tokens after the final LayerNorm, timm's pre-logits (transformers has no pooled
output). transformers' DeiT uses LayerNorm eps 1e-12 where timm's uses 1e-6.
"""

from __future__ import annotations

from typing import Any

from model_export.formats.adapter import Adapter, Hints
from model_export.formats.base import State, reading
from model_export.formats.files import Checkpoint, Files
from model_export.formats.hf import Family, family_config, from_transformers
from model_export.model.vit import ViTConfig

_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.distillation_token": "dist_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "cls_classifier.weight": "head.weight",
    "cls_classifier.bias": "head.bias",
    "distillation_classifier.weight": "head_dist.weight",
    "distillation_classifier.bias": "head_dist.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}
_IGNORED = ("pooler.", "embeddings.mask_token")  # as for ViT (hf.py)
FAMILY = Family(
    model_types=("deit",),
    config=dict(num_attention_heads=12, hidden_act="gelu", layer_norm_eps=1e-12),
    processor=dict(  # DeiTImageProcessor: 256 × 256, centre crop 224, ImageNet statistics
        size={"height": 256, "width": 256},
        crop_size={"height": 224, "width": 224},
        do_center_crop=True,
        resample=3,
        image_mean=(0.485, 0.456, 0.406),
        image_std=(0.229, 0.224, 0.225),
    ),
    pos_embed_resize="bicubic",
)


def from_hf_deit(state: State) -> State:
    return from_transformers(state, _TOP, _IGNORED, ("deit.",), "transformers DeiT")


def deit_config(state: State, files: Files, hints: Hints) -> tuple[ViTConfig, State]:
    # One classifier on the class token reads that token; two (or none) read the mean of both.
    settings: dict[str, Any] = {}
    if "dist_token" in state and "head.weight" in state and "head_dist.weight" not in state:
        settings["pool"] = "cls"
    return family_config(state, files, FAMILY, hints, **settings)


def detect(keys: frozenset[str], files: Files) -> bool:
    if files.is_folder:
        return files.config.get("model_type") in FAMILY.model_types
    return any(k.startswith("deit.embeddings.") for k in keys)


def load(checkpoint: Checkpoint, hints: Hints) -> tuple[ViTConfig, State]:
    files = checkpoint.files
    state = reading(files.weights or files.path, from_hf_deit, checkpoint.tensors())
    return reading(files.path, deit_config, state, files, hints)


ADAPTER = Adapter("hf-deit", detect, load)
