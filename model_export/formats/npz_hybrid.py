"""Google's hybrid ResNet + ViT .npz (R50+ViT-B_16, R26+ViT-S_32, R+Ti_16, …): adapter, mapping.

Detected by a .npz with a ResNet root (conv_root). The backbone's arrays (vit_jax models_resnet):

    conv_root/kernel (7, 7, C, 64·w) HWIO, gn_root/{scale,bias}   -> patch_embed.backbone.stem
    block{s}/unit{u}/conv{1,2,3}/kernel, gn{1,2,3}/{scale,bias}  -> …stages.{s-1}.blocks.{u-1}
    block{s}/unit{u}/conv_proj/kernel, gn_proj/{scale,bias}      -> …downsample.{conv,norm}

GroupNorm parameters are (C,), or (1, 1, 1, C) in files from the older flax.nn. Everything else is
a Google ViT in released or Linen names (npz.py, npz_linen.py) whose embedding is a P×P conv over
the feature map. Flax's numerics, which the config records: kernels standardised as
(w - μ)/(σ + 1e-5), GroupNorm eps 1e-6 (flax.linen.GroupNorm's default), tanh GELU.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import torch

from model_export.formats import npz, npz_linen
from model_export.formats.adapter import Adapter, Grid, Hints
from model_export.formats.base import State, reading
from model_export.formats.files import Checkpoint, Files
from model_export.formats.geometry import backbone_from_shapes
from model_export.model.resnet import backbone_stride
from model_export.model.vit import ViTConfig

_ROOT = re.compile(r"^(conv_root|gn_root|block\d+)/")
_STEM = {"conv_root/kernel": "stem.conv.weight", "gn_root/scale": "stem.norm.weight",
         "gn_root/bias": "stem.norm.bias"}  # fmt: skip
_UNIT = re.compile(
    r"^block(\d+)/unit(\d+)/(conv[123]|gn[123]|conv_proj|gn_proj)/(kernel|scale|bias)$"
)
_LAYER = {"conv_proj": "downsample.conv", "gn_proj": "downsample.norm"}
_PARAM = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_TARGET = "patch_embed.backbone."


def from_npz_hybrid(arrays: Mapping[str, np.ndarray]) -> State:
    backbone, vit = _split(arrays)
    return {**npz.from_npz(vit), **{_TARGET + k: v for k, v in _backbone(backbone).items()}}


def npz_hybrid_config(
    arrays: Mapping[str, np.ndarray], state: State, grid: Grid | None = None
) -> ViTConfig:
    """npz.py's config for the ViT over the feature map, then the backbone under it.

    grid: the token grid, for a non-square model (the file records only its number of tokens).
    """
    _, vit = _split(arrays)
    over_map = npz.npz_config(vit, grid)  # image_size here is the feature map's, channels C'
    hybrid = backbone_from_shapes(state)
    stride = backbone_stride(hybrid["backbone"])
    rows, cols = over_map.image_hw
    return replace(
        over_map,
        image_size=(rows * stride, cols * stride),
        backbone_std="flax",
        backbone_gn_eps=1e-6,
        **hybrid,
    )


def _split(arrays: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    backbone = {k: v for k, v in arrays.items() if _ROOT.match(k)}
    vit = npz_linen.to_released({k: v for k, v in arrays.items() if k not in backbone})
    return backbone, vit


def _backbone(arrays: Mapping[str, np.ndarray]) -> State:
    out: State = {}
    unknown = []
    for name, value in arrays.items():
        if name in _STEM:
            ours = _STEM[name]
        elif m := _UNIT.match(name):
            stage, unit, layer, param = int(m[1]) - 1, int(m[2]) - 1, m[3], m[4]
            layer = _LAYER.get(layer, layer.replace("gn", "norm"))
            ours = f"stages.{stage}.blocks.{unit}.{layer}.{_PARAM[param]}"
        else:
            unknown.append(name)
            continue
        out[ours] = _tensor(name, value)
    if unknown:
        raise ValueError(f"not a Google hybrid ResNet: unexpected arrays {', '.join(unknown)}")
    if "stem.conv.weight" not in out:
        raise ValueError("not a Google hybrid ResNet: no conv_root/kernel")
    return out


def _tensor(name: str, value: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(value, dtype=np.float32))
    if name.endswith("/kernel"):
        if t.ndim != 4:
            raise ValueError(f"{name}: expected an HWIO kernel, got shape {tuple(t.shape)}")
        return t.permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
    if t.ndim == 4 and t.shape[:3] == (1, 1, 1):  # flax.nn's GroupNorm kept (1, 1, 1, C)
        t = t.reshape(-1)
    if t.ndim != 1:
        raise ValueError(f"{name}: expected (C,) or (1, 1, 1, C), got shape {tuple(t.shape)}")
    return t


def detect(keys: frozenset[str], files: Files) -> bool:
    if files.weights is None or files.weights.suffix != ".npz":
        return False
    return {"conv_root/kernel", "embedding/kernel"} <= keys  # a ResNet root under a ViT


def load(checkpoint: Checkpoint, hints: Hints) -> tuple[ViTConfig, State]:
    arrays, path = checkpoint.arrays(), checkpoint.files.path
    state = reading(path, from_npz_hybrid, arrays)
    return reading(path, npz_hybrid_config, arrays, state, hints.grid), state


ADAPTER = Adapter("npz-hybrid", detect, load)
