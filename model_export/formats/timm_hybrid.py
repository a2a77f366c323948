"""timm's hybrid ResNet + ViT checkpoints (vision_transformer_hybrid): adapter, mapping, config.

Detected by a patch_embed.backbone in the keys (timm.py declines those). timm builds the backbone
as a ResNetV2 without pre-activation (BiT's ResNet v1: StdConv2dSame, GroupNorm), named as ours:

    patch_embed.backbone.stem.{conv,norm}                          R50 / R26 layouts
    patch_embed.backbone.stages.N.blocks.M.{conv,norm}{1,2,3}, …downsample.{conv,norm}
    patch_embed.backbone.{conv,norm}                               stem only: the stem *is* it
    patch_embed.proj                                               P×P conv over the feature map

and the rest is a timm ViT (timm.py). Its numerics, which the config records: kernels standardised
as (w - μ)/√(σ² + 1e-8) (StdConv2dSame(eps=1e-8)), GroupNorm eps 1e-5, erf GELU, LayerNorm 1e-6.
timm's ResNet-D hybrids (vit_*_resnet26d/50d: BatchNorm, a deep stem) are another network and are
refused by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from model_export.formats.adapter import Adapter, Hints
from model_export.formats.base import State, reading
from model_export.formats.files import Checkpoint, Files
from model_export.formats.timm import from_timm, strip_prefixes, timm_config
from model_export.model.vit import ViTConfig

BACKBONE = "patch_embed.backbone."
_STEM_ONLY = re.compile(r"^patch_embed\.backbone\.(conv|norm)\.")
_OURS = re.compile(
    r"^patch_embed\.backbone\.(stem\.(conv|norm)\.|stages\.\d+\.blocks\.\d+\."
    r"((conv|norm)[123]|downsample\.(conv|norm))\.)"
)
TIMM_NUMERICS: dict[str, Any] = dict(backbone_std="timm", backbone_gn_eps=1e-5)


def from_timm_hybrid(state: Mapping[str, torch.Tensor], patches: int | None = None) -> State:
    """timm hybrid -> ours: timm's ViT mapping, with the stem-only layout nested as a stem."""
    sd = {
        _STEM_ONLY.sub(r"patch_embed.backbone.stem.\1.", k): v
        for k, v in from_timm(state, patches).items()
    }
    foreign = sorted(k for k in sd if k.startswith(BACKBONE) and not _OURS.match(k))
    if foreign:
        raise ValueError(
            "unsupported timm hybrid backbone (only the BiT ResNet v1 of vit_*_r50/r26/r_s16 "
            f"loads here, not a ResNet-D with BatchNorm): {', '.join(foreign[:4])}, …"
        )
    return sd


def detect(keys: frozenset[str], files: Files) -> bool:
    if files.is_folder and "architecture" not in files.config:
        return False  # a folder is timm's only with timm's config.json
    return any(strip_prefixes(k).startswith(BACKBONE) for k in keys)


def load(checkpoint: Checkpoint, hints: Hints) -> tuple[ViTConfig, State]:
    files = checkpoint.files
    sidecar = files.config if "architecture" in files.config else {}
    patches = hints.grid[0] * hints.grid[1] if hints.grid else None
    state = reading(files.weights or files.path, from_timm_hybrid, checkpoint.tensors(), patches)
    return reading(files.path, timm_config, state, hints, sidecar, **TIMM_NUMERICS), state


ADAPTER = Adapter("timm-hybrid", detect, load)
