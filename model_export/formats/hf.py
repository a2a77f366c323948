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
from dataclasses import dataclass
from typing import Any

import torch

from model_export.formats.adapter import Adapter, Hints
from model_export.formats.base import State, reading, rgb
from model_export.formats.files import Checkpoint, Files
from model_export.formats.geometry import at_size, config_from_shapes
from model_export.model.pos_embed import PosEmbedResize
from model_export.model.vit import Gelu, Interpolation, ViTConfig

PREPROCESSOR = "preprocessor_config.json"

# Per-layer parameters, 4.x `encoder.layer.N.<module>`, 5.x `layers.N.<module>`, CLIP and SigLIP
# `encoder.layers.N.<module>`; DINOv2's LayerScale parameter is called lambda1.
_HF_LAYER = re.compile(r"(?:encoder\.)?layers?\.(\d+)\.(.+)\.(weight|bias|lambda1)")
_HF_BLOCK = {  # module, in every family's names -> ours inside blocks.N (see _FUSED)
    # ViT and DeiT, 4.x
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    # ViT, DeiT and DINOv2, 5.x
    "attention.q_proj": "q",
    "attention.k_proj": "k",
    "attention.v_proj": "v",
    "attention.o_proj": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    # DINOv2: its norms, LayerScale, and the SwiGLU MLP (4.x packs gate and value in weights_in)
    "norm1": "norm1",
    "norm2": "norm2",
    "layer_scale1": "ls1",
    "layer_scale2": "ls2",
    "mlp.weights_in": "mlp.fc1",
    "mlp.weights_out": "mlp.fc2",
    "mlp.gate_proj": "gate",
    "mlp.up_proj": "up",
    "mlp.down_proj": "mlp.fc2",
    # CLIP and SigLIP
    "self_attn.q_proj": "q",
    "self_attn.k_proj": "k",
    "self_attn.v_proj": "v",
    "self_attn.out_proj": "attn.proj",
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
}
# Separate projections ours fuses into one, in the order ours reads them.
_FUSED = {"q": "attn.qkv", "k": "attn.qkv", "v": "attn.qkv", "gate": "mlp.fc1", "up": "mlp.fc1"}
_FUSE_ORDER = {"attn.qkv": ("q", "k", "v"), "mlp.fc1": ("gate", "up")}
_PARAMS = {"weight": "weight", "bias": "bias", "lambda1": "gamma"}
# The tensors outside the blocks, transformers' name → ours (DINOv2 adds its registers to these).
HF_TOP = {
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
_HF_GELU: dict[str, Gelu] = {
    "gelu": "erf",
    "gelu_new": "tanh",
    "gelu_pytorch_tanh": "tanh",
    "quick_gelu": "quick_gelu",  # CLIP
}
_PIL_RESAMPLE: dict[int, Interpolation] = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def from_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ViT (4.x or 5.x names, with or without the `vit.` prefix) -> ours."""
    return from_transformers(state, HF_TOP, _HF_IGNORED, ("vit.",), "HF ViT")


def from_transformers(
    state: Mapping[str, torch.Tensor],
    top: Mapping[str, str],
    ignored: tuple[str, ...],
    prefixes: tuple[str, ...],
    what: str,
) -> dict[str, torch.Tensor]:
    """A transformers image encoder -> ours: its encoder layers by _HF_BLOCK (every family's
    names), the rest by `top`; keys under `ignored` are dropped, `prefixes` stripped.

    transformers keeps q, k and v as three (D, D) projections; ours is one fused (3D, D) qkv, q
    rows first. DINOv2's 5.x SwiGLU gate and up projections fuse into fc1 the same way.
    """
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    unknown = []
    for key, tensor in state.items():
        name = key
        for prefix in prefixes:
            name = name.removeprefix(prefix)
        if name.startswith(ignored):
            continue
        layer = _HF_LAYER.fullmatch(name)
        if name in top:
            out[top[name]] = tensor
        elif layer and layer[2] in _HF_BLOCK:
            i, module, param = layer.groups()
            target = _HF_BLOCK[module]
            if target in _FUSED:
                fused[f"blocks.{i}.{_FUSED[target]}.{_PARAMS[param]}"][target] = tensor
            else:
                out[f"blocks.{i}.{target}.{_PARAMS[param]}"] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"not a {what} state dict; unexpected keys: {', '.join(unknown)}")
    for name, parts in fused.items():
        out[name] = _fuse(name, parts)
    return out


def _fuse(name: str, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
    order = _FUSE_ORDER[name.split(".", 2)[2].rsplit(".", 1)[0]]
    missing = [p for p in order if p not in parts]
    if missing:
        raise ValueError(f"{name}: the checkpoint lacks the {'/'.join(missing)} projection")
    shapes = {p: tuple(parts[p].shape) for p in order}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{name}: {', '.join(order)} differ in shape {shapes}")
    return torch.cat([parts[p] for p in order])  # (3D, D) or (3D,); (2H, D) or (2H,)


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


# --- what the family adapters share (hf_deit, hf_dinov2, hf_clip, hf_siglip) ----------------------


@dataclass(frozen=True)
class Family:
    """One transformers family as its adapter reads it: the config.json it writes, the defaults
    its config and image processor fill in, and how it resamples position embeddings."""

    model_types: tuple[str, ...]  # config.json model_type: the family's own, or a nested one's
    config: Mapping[str, Any]  # its config class's defaults, for files that leave fields out
    processor: Mapping[str, Any]  # its image processor's defaults, without preprocessor_config
    pos_embed_resize: PosEmbedResize  # what its interpolate_pos_encoding computes


def vision_config(files: Files, family: Family) -> dict[str, Any]:
    """config.json's vision settings with the family's defaults: a vision model's own config,
    or a two-tower model's (CLIP, SigLIP) vision_config; the defaults alone for a bare file."""
    c = files.config
    if c.get("model_type") not in family.model_types:
        return dict(family.config)
    return {**family.config, **c.get("vision_config", c)}


def family_config(
    state: State, files: Files, family: Family, hints: Hints, **settings: Any
) -> tuple[ViTConfig, State]:
    """The ViTConfig of a family's mapped state: sizes and variants from the shapes (geometry),
    heads, eps, activation and labels from config.json, preprocessing and the input size from
    preprocessor_config.json. A processor that crops or resizes to another size than the
    position embeddings' (DINOv2: 518 px of positions, 224 px inputs) moves them there, as the
    family's own interpolate_pos_encoding does on every call."""
    c = vision_config(files, family)
    if c["hidden_act"] not in _HF_GELU:
        raise ValueError(f"hidden_act {c['hidden_act']!r} is unsupported (gelu variants only)")
    num_classes = state["head.weight"].shape[0] if "head.weight" in state else 0
    id2label = files.config.get("id2label") or {}
    preprocess, side = processor_settings(files.json(PREPROCESSOR), family.processor)
    recorded = files.config.get("model_type") in family.model_types  # else a lone weights file
    config = config_from_shapes(
        state,
        c["num_attention_heads"] if recorded else hints.heads,  # None: infer_heads
        grid=hints.grid,
        eps=c["layer_norm_eps"],
        gelu=_HF_GELU[c["hidden_act"]],
        labels=tuple(id2label[k] for k in sorted(id2label, key=int)) if num_classes else (),
        pos_embed_resize=family.pos_embed_resize,
        **preprocess,
        **settings,
    )
    return at_size(config, state, side if PREPROCESSOR in files.names else None)


def processor_settings(
    p: Mapping[str, Any], defaults: Mapping[str, Any]
) -> tuple[dict[str, Any], int | None]:
    """An image processor's settings as ViTConfig fields, and the side of what it outputs.

    Resize then centre-crop (CLIP, DINOv2, DeiT) is our crop mode, crop_pct = crop / resize;
    resize alone (SigLIP) squash. transformers' DeiT squashes to 256×256 before its crop where
    ours resizes the shorter side: the same pixels for square images.
    """
    c = {**defaults, **p}
    resample = c.get("resample", 3)
    if resample not in _PIL_RESAMPLE:
        raise ValueError(f"preprocessor resample {resample!r} is unsupported")
    normalise = c.get("do_normalize", True)
    settings: dict[str, Any] = dict(
        mean=rgb(c["image_mean"], "image_mean") if normalise else (0.0, 0.0, 0.0),
        std=rgb(c["image_std"], "image_std") if normalise else (1.0, 1.0, 1.0),
        interpolation=_PIL_RESAMPLE[resample],
        resize_mode="squash",
        crop_pct=1.0,
    )
    resize = _side(c.get("size"), "size")
    if c.get("do_center_crop") and c.get("crop_size") is not None:
        crop = _side(c["crop_size"], "crop_size")
        assert crop is not None
        settings.update(resize_mode="crop", crop_pct=min(1.0, crop / (resize or crop)))
        return settings, crop
    return settings, resize


def _side(size: Any, name: str) -> int | None:
    """A processor's size: an int, {"shortest_edge": S}, or {"height": S, "width": S}."""
    if size is None or isinstance(size, int):
        return size
    if isinstance(size, dict) and "shortest_edge" in size:
        return int(size["shortest_edge"])
    if isinstance(size, dict) and size.get("height") == size.get("width") is not None:
        return int(size["height"])
    raise ValueError(f"preprocessor {name} {size!r} is unsupported (square sizes only)")


# --- the adapter ---------------------------------------------------------------------------------


def detect(keys: frozenset[str], files: Files) -> bool:
    if files.is_folder:
        return files.config.get("model_type") == "vit"
    if any(".layer_scale1." in k or "register_tokens" in k for k in keys):
        return False  # a DINOv2 (hf_dinov2.py)
    return any(k.removeprefix("vit.").startswith("embeddings.patch_embeddings") for k in keys)


def load(checkpoint: Checkpoint, hints: Hints) -> tuple[ViTConfig, State]:
    files = checkpoint.files
    state = reading(files.weights or files.path, from_hf, checkpoint.tensors())
    if files.config.get("model_type") != "vit":  # a lone file without its config.json
        return reading(files.path, bare_hf_config, state, hints.heads), state
    config = reading(
        files.folder / "config.json", hf_config, files.config, files.json(PREPROCESSOR), state
    )
    return config, state


ADAPTER = Adapter("hf", detect, load)
