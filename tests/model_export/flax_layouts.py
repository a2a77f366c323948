"""Google's .npz layouts written from a state dict in our (= timm's) names, for the loader tests.

hybrid_npz(model)  the released hybrid layout: conv_root, gn_root, block{s}/unit{u}/…, plus
                   the ViT's arrays; GroupNorm parameters (C,) or flax.nn's (1, 1, 1, C)
to_linen(arrays)   the same ViT arrays under today's vit_jax (Flax Linen) names
"""

from __future__ import annotations

import re

import numpy as np

from model_export.model.vit import ViT
from tests.model_export.conftest import _to_npz

_LINEN = {
    "MultiHeadDotProductAttention_1/": "MultiHeadDotProductAttention_0/",
    "LayerNorm_2/": "LayerNorm_1/",
    "MlpBlock_3/": "MlpBlock_0/",
}
_UNIT = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(.+)\.(weight|bias)$")
_FLAX_LAYER = {"downsample.conv": "conv_proj", "downsample.norm": "gn_proj"}


def hybrid_npz(model: ViT, gn_4d: bool = False) -> dict[str, np.ndarray]:
    arrays = _to_npz(model)  # the ViT's arrays; embedding/kernel (P, P, C', D) over the map
    prefix = "patch_embed.backbone."
    for name, t in model.state_dict().items():
        if not name.startswith(prefix):
            continue
        value = t.detach().numpy()
        key = name[len(prefix) :]
        if key.startswith("stem."):
            flax = {"conv": "conv_root", "norm": "gn_root"}[key.split(".")[1]]
            param = key.split(".")[2]
        else:
            m = _UNIT.match(key)
            assert m, key
            layer = _FLAX_LAYER.get(m[3], m[3].replace("norm", "gn"))
            flax, param = f"block{int(m[1]) + 1}/unit{int(m[2]) + 1}/{layer}", m[4]
        if value.ndim == 4:  # conv OIHW -> HWIO
            arrays[f"{flax}/kernel"] = value.transpose(2, 3, 1, 0)
        else:
            scale_or_bias = "scale" if param == "weight" else "bias"
            arrays[f"{flax}/{scale_or_bias}"] = value.reshape(1, 1, 1, -1) if gn_4d else value
    return arrays


def to_linen(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    def rename(name: str) -> str:
        if name.startswith("Transformer/encoderblock_"):
            for released, linen in _LINEN.items():
                name = name.replace(f"/{released}", f"/{linen}")
        return name

    return {rename(k): v for k, v in arrays.items()}
