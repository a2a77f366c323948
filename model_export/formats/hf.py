"""HuggingFace transformers ViT checkpoints: the adapter, the key mapping and the config.

Detected by a folder's config.json (model_type "vit") or, for a lone weights file, by its keys
(embeddings.patch_embeddings...). A folder holds config.json, optionally preprocessor_config.json,
and safetensors or pytorch_model.bin weights, optionally sharded; a bare HF-keyed file with no
config.json is configured from its shapes and transformers' defaults (bare_hf_config).

from_hf, hf_config and bare_hf_config are pure and raise ValueError on weights or a config this
ViT cannot take; load reports that as a CheckpointError naming the file. Keys may carry the `vit.`
prefix; per encoder layer N, 4.x names under `encoder.layer.N.`, 5.x names under `layers.N.`:

    attention.attention.{query,key,value} | attention.{q,k,v}_proj -> blocks.N.attn.qkv (fused)
    attention.output.dense                | attention.o_proj        -> blocks.N.attn.proj
    intermediate.dense                    | mlp.fc1                 -> blocks.N.mlp.fc1
    output.dense                          | mlp.fc2                 -> blocks.N.mlp.fc2
    layernorm_before, layernorm_after                               -> blocks.N.norm{1,2}

and embeddings.{cls_token,position_embeddings,patch_embeddings.projection} -> cls_token,
pos_embed, patch_embed.proj; layernorm -> norm; classifier -> head. pooler.* and
embeddings.mask_token are dropped.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch

from model_export.formats.adapter import Adapter
from model_export.formats.base import State, reading, rgb
from model_export.formats.files import Checkpoint, Files
from model_export.formats.geometry import config_from_shapes
from model_export.model.vit import Gelu, Interpolation, ViTConfig

PREPROCESSOR = "preprocessor_config.json"

# Per-layer parameters in both layouts: 4.x `encoder.layer.N.<module>`, 5.x `layers.N.<module>`.
_HF_LAYER = re.compile(r"(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)")
_HF_BLOCK = {  # module, 4.x and 5.x name -> ours inside blocks.N ("q"/"k"/"v" get fused)
    "attention.attention.query": "q",
    "attention.q_proj": "q",
    "attention.attention.key": "k",
    "attention.k_proj": "k",
    "attention.attention.value": "v",
    "attention.v_proj": "v",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "mlp.fc1": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc2": "mlp.fc2",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}
# The pooler (dense + tanh on [CLS]) is BERT's next-sentence head, not the paper's; the mask token
# serves only masked-image pre-training. Neither takes part in classifying or embedding.
_HF_IGNORED = ("pooler.", "embeddings.mask_token")
# transformers' ViTConfig defaults, for old config.json files that leave fields out.
_HF_DEFAULTS: dict[str, Any] = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    image_size=224,
    patch_size=16,
    num_channels=3,
    qkv_bias=True,
)
_HF_GELU: dict[str, Gelu] = {"gelu": "erf", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
_PIL_RESAMPLE: dict[int, Interpolation] = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def from_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ViT (4.x or 5.x names, with or without the `vit.` prefix) -> ours.

    HF keeps q, k and v as three (D, D) projections; ours is one fused (3D, D) qkv, q rows first.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    unknown = []
    for key, tensor in state.items():
        name = key.removeprefix("vit.")
        if name.startswith(_HF_IGNORED):
            continue
        layer = _HF_LAYER.fullmatch(name)
        if name in _HF_TOP:
            out[_HF_TOP[name]] = tensor
        elif layer and layer[2] in _HF_BLOCK:
            i, module, param = layer.groups()
            target = _HF_BLOCK[module]
            if target in ("q", "k", "v"):
                qkv[f"blocks.{i}.attn.qkv.{param}"][target] = tensor
            else:
                out[f"blocks.{i}.{target}.{param}"] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"not a HF ViT state dict; unexpected keys: {', '.join(unknown)}")
    for name, parts in qkv.items():
        out[name] = _fuse_qkv(name, parts)
    return out


def _fuse_qkv(name: str, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
    missing = [p for p in "qkv" if p not in parts]
    if missing:
        raise ValueError(f"{name}: the checkpoint lacks the {'/'.join(missing)} projection")
    shapes = {p: tuple(parts[p].shape) for p in "qkv"}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{name}: q, k and v differ in shape {shapes}")
    return torch.cat([parts["q"], parts["k"], parts["v"]])  # (3D, D) or (3D,)


def bare_hf_config(state: Mapping[str, torch.Tensor], heads: int | None) -> ViTConfig:
    """A HF-keyed file with no config.json: shapes give the sizes, transformers the defaults."""
    return config_from_shapes(
        state,
        heads,
        eps=_HF_DEFAULTS["layer_norm_eps"],
        gelu=_HF_GELU[_HF_DEFAULTS["hidden_act"]],
        **_hf_preprocess({}),
    )


def hf_config(
    config: Mapping[str, Any], preprocessor: Mapping[str, Any], state: Mapping[str, torch.Tensor]
) -> ViTConfig:
    """ViTConfig from HF config.json, preprocessor_config.json and the mapped state's head."""
    c = {**_HF_DEFAULTS, **config}
    if c["hidden_act"] not in _HF_GELU:
        raise ValueError(f"hidden_act {c['hidden_act']!r} is unsupported (gelu variants only)")
    num_classes = state["head.weight"].shape[0] if "head.weight" in state else 0
    id2label = c.get("id2label") or {}
    # A ViTModel's config still carries id2label; without a classifier it names nothing.
    labels = tuple(id2label[k] for k in sorted(id2label, key=int)) if num_classes else ()
    return ViTConfig(
        image_size=_square(c["image_size"], "image_size"),
        patch_size=_square(c["patch_size"], "patch_size"),
        channels=c["num_channels"],
        dim=c["hidden_size"],
        depth=c["num_hidden_layers"],
        heads=c["num_attention_heads"],
        mlp_dim=c["intermediate_size"],
        num_classes=num_classes,
        eps=c["layer_norm_eps"],
        gelu=_HF_GELU[c["hidden_act"]],
        qkv_bias=c["qkv_bias"],
        labels=labels,
        **_hf_preprocess(preprocessor),
    )


def _hf_preprocess(p: Mapping[str, Any]) -> dict[str, Any]:
    # ViTImageProcessor's defaults: bilinear resize straight to H×W, then normalise to [-1, 1].
    resample = p.get("resample", 2)
    if resample not in _PIL_RESAMPLE:
        raise ValueError(f"preprocessor resample {resample!r} is unsupported")
    normalise = p.get("do_normalize", True)
    return dict(
        mean=rgb(p.get("image_mean", 0.5), "image_mean") if normalise else (0.0, 0.0, 0.0),
        std=rgb(p.get("image_std", 0.5), "image_std") if normalise else (1.0, 1.0, 1.0),
        interpolation=_PIL_RESAMPLE[resample],
        resize_mode="squash",
    )


def _square(value: int | list[int], name: str) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(f"non-square {name} {value} is unsupported")
    return int(value[0])


# --- the adapter ---------------------------------------------------------------------------------


def detect(keys: frozenset[str], files: Files) -> bool:
    if files.is_folder:
        return files.config.get("model_type") == "vit"
    return any(k.removeprefix("vit.").startswith("embeddings.patch_embeddings") for k in keys)


def load(checkpoint: Checkpoint, heads: int | None) -> tuple[ViTConfig, State]:
    files = checkpoint.files
    state = reading(files.weights or files.path, from_hf, checkpoint.tensors())
    if files.config.get("model_type") != "vit":  # a lone file without its config.json
        return reading(files.path, bare_hf_config, state, heads), state
    config = reading(
        files.folder / "config.json", hf_config, files.config, files.json(PREPROCESSOR), state
    )
    return config, state


ADAPTER = Adapter("hf", detect, load)
