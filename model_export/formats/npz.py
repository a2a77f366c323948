"""Google's released Flax ViT checkpoints (.npz): the adapter, the key mapping and the config.

Detected by a .npz whose arrays all sit under the released names below (a ResNet root or Linen's
MultiHeadDotProductAttention_0 belongs to another adapter). from_npz and npz_config are pure and
raise ValueError on a file that is not a Google ViT; load reports that as a CheckpointError naming
the file. Flax names and shapes, per encoder block N:

    Transformer/encoderblock_N/
        LayerNorm_0/{scale,bias}                                  -> blocks.N.norm1
        MultiHeadDotProductAttention_1/{query,key,value}/kernel   (D, H, D/H) -> blocks.N.attn.qkv
        MultiHeadDotProductAttention_1/out/kernel                 (H, D/H, D) -> blocks.N.attn.proj
        LayerNorm_2/{scale,bias}                                  -> blocks.N.norm2
        MlpBlock_3/Dense_{0,1}/{kernel,bias}                      -> blocks.N.mlp.fc{1,2}

Flax numbers sub-modules in creation order (LayerNorm_0, MHA_1, LayerNorm_2, MlpBlock_3), hence
no LayerNorm_1. Dense kernels are (in, out) where torch Linear weights are (out, in).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
import torch

from model_export.formats.adapter import Adapter, Grid, Hints
from model_export.formats.base import State, reading
from model_export.formats.files import Checkpoint, Files
from model_export.model.vit import ViTConfig

_BLOCK = re.compile(r"Transformer/encoderblock_(\d+)/")
_MHA = "MultiHeadDotProductAttention_1/"
_QKV = ("query", "key", "value")
_NORMS = {"norm1": "LayerNorm_0", "norm2": "LayerNorm_2"}
_DENSE = {"mlp.fc1": "MlpBlock_3/Dense_0", "mlp.fc2": "MlpBlock_3/Dense_1"}
_TOP = (
    "embedding/kernel",  # (P, P, C, D), HWIO
    "embedding/bias",
    "cls",  # (1, 1, D)
    "Transformer/posembed_input/pos_embedding",  # (1, 1 + g², D)
    "Transformer/encoder_norm/scale",
    "Transformer/encoder_norm/bias",
)
_PER_BLOCK = (
    *(f"{m}/{p}" for m in _NORMS.values() for p in ("scale", "bias")),
    *(f"{m}/{p}" for m in _DENSE.values() for p in ("kernel", "bias")),
    *(f"{_MHA}{n}/{p}" for n in (*_QKV, "out") for p in ("kernel", "bias")),
)
_OPTIONAL = ("head/kernel", "head/bias", "pre_logits/kernel", "pre_logits/bias")
_ROOTS = {name.split("/")[0] for name in (*_TOP, *_OPTIONAL)}  # Transformer, embedding, cls, ...


def from_npz(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Google ViT arrays -> our state dict."""
    _check_names(arrays)
    a = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}
    dim = a["embedding/kernel"].shape[-1]
    out = {
        "patch_embed.proj.weight": _ndim(a, "embedding/kernel", 4).permute(3, 2, 0, 1),  # OIHW
        "patch_embed.proj.bias": a["embedding/bias"],
        "cls_token": a["cls"],
        "pos_embed": a["Transformer/posembed_input/pos_embedding"],
        "norm.weight": a["Transformer/encoder_norm/scale"],
        "norm.bias": a["Transformer/encoder_norm/bias"],
    }
    for name in ("head", "pre_logits"):
        if f"{name}/kernel" in a:
            out[f"{name}.weight"] = _ndim(a, f"{name}/kernel", 2).T
            out[f"{name}.bias"] = a[f"{name}/bias"]
    for i in range(_depth(arrays)):
        out.update(_block(a, f"Transformer/encoderblock_{i}/", f"blocks.{i}.", dim))
    return {k: v.contiguous() for k, v in out.items()}


def _block(a: Mapping[str, torch.Tensor], src: str, dst: str, dim: int) -> dict[str, torch.Tensor]:
    out = {}
    for ours, theirs in _NORMS.items():
        out[f"{dst}{ours}.weight"] = a[f"{src}{theirs}/scale"]
        out[f"{dst}{ours}.bias"] = a[f"{src}{theirs}/bias"]
    for ours, theirs in _DENSE.items():
        out[f"{dst}{ours}.weight"] = _ndim(a, f"{src}{theirs}/kernel", 2).T
        out[f"{dst}{ours}.bias"] = a[f"{src}{theirs}/bias"]
    # (D, H, D/H) flattens head-major to (D, D), the order our fused qkv reshape splits heads in.
    qkv = [_ndim(a, f"{src}{_MHA}{n}/kernel", 3).reshape(dim, -1).T for n in _QKV]
    out[f"{dst}attn.qkv.weight"] = torch.cat(qkv)  # (3D, D): q rows, then k, then v
    out[f"{dst}attn.qkv.bias"] = torch.cat([a[f"{src}{_MHA}{n}/bias"].reshape(-1) for n in _QKV])
    # (H, D/H, D) -> (D_in, D_out) -> (D_out, D_in)
    out[f"{dst}attn.proj.weight"] = _ndim(a, f"{src}{_MHA}out/kernel", 3).reshape(-1, dim).T
    out[f"{dst}attn.proj.bias"] = a[f"{src}{_MHA}out/bias"]
    return out


def npz_config(arrays: Mapping[str, np.ndarray], grid: Grid | None = None) -> ViTConfig:
    """The ViTConfig the arrays imply; the query kernel (D, H, D/H) even records the head count.

    grid: (rows, cols) of tokens; the file records only how many positions there are, which gives
    the grid only when it is square.
    """
    _check_names(arrays)
    patch, patch_w, channels, dim = arrays["embedding/kernel"].shape  # (P, P, C, D)
    if patch != patch_w:
        raise ValueError(f"non-square patches {patch}×{patch_w} are unsupported")
    rows, cols = token_grid(arrays["Transformer/posembed_input/pos_embedding"], grid)
    head, pre_logits = arrays.get("head/kernel"), arrays.get("pre_logits/kernel")
    block0 = "Transformer/encoderblock_0/"
    return ViTConfig(
        image_size=(rows * patch, cols * patch),
        patch_size=patch,
        channels=channels,
        dim=dim,
        depth=_depth(arrays),
        heads=arrays[f"{block0}{_MHA}query/kernel"].shape[1],
        mlp_dim=arrays[f"{block0}{_DENSE['mlp.fc1']}/kernel"].shape[1],
        num_classes=0 if head is None else head.shape[1],
        eps=1e-6,  # Flax LayerNorm's default
        gelu="tanh",  # flax.linen.gelu's default is the tanh approximation
        representation_size=None if pre_logits is None else pre_logits.shape[1],
        # Google's input pipeline: bilinear resize straight to H×W, pixels scaled to [-1, 1].
        interpolation="bilinear",
        resize_mode="squash",
    )


def token_grid(pos: np.ndarray, grid: Grid | None) -> Grid:
    """(rows, cols) of a (1, 1 + N, D) pos_embedding: the square one, or the caller's grid."""
    n = pos.shape[1] - 1 if pos.ndim == 3 else 0
    if n < 1:
        raise ValueError(f"pos_embedding {pos.shape} is not (1, 1 + N, D)")
    if grid is not None:
        if grid[0] * grid[1] != n:
            raise ValueError(
                f"grid {grid[0]}x{grid[1]} was given, but pos_embedding {pos.shape} holds {n} "
                "patch positions"
            )
        return grid
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(
            f"pos_embedding {pos.shape} is not (1, 1 + g², D): its {n} patch positions are no "
            "square grid, and the file does not record the grid; say it with --grid RxC (rows x "
            "columns of tokens, e.g. 5x7 for 160×224 px at stride 32), or grid=(rows, cols)"
        )
    return g, g


def _check_names(arrays: Mapping[str, object]) -> None:
    """Every array a Google ViT has and nothing else; both lists in one error."""
    depth = _depth(arrays)
    required = [*_TOP]
    required += [f"Transformer/encoderblock_{i}/{k}" for i in range(depth) for k in _PER_BLOCK]
    missing = [k for k in required if k not in arrays]
    unexpected = sorted(set(arrays) - set(required) - set(_OPTIONAL))
    problems = []
    if missing:
        problems.append(f"missing arrays: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected arrays: {', '.join(unexpected)}")
    if problems:
        raise ValueError("not a Google ViT .npz: " + " | ".join(problems))


def _depth(arrays: Mapping[str, object]) -> int:
    blocks = {int(m[1]) for k in arrays if (m := _BLOCK.match(k))}
    if not blocks:
        raise ValueError("not a Google ViT .npz: no Transformer/encoderblock_N/ arrays")
    if blocks != set(range(len(blocks))):
        raise ValueError(f"encoder blocks are not numbered 0..L-1 (found {sorted(blocks)})")
    return len(blocks)


def _ndim(a: Mapping[str, torch.Tensor], name: str, ndim: int) -> torch.Tensor:
    if a[name].ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(a[name].shape)}")
    return a[name]


# --- the adapter ---------------------------------------------------------------------------------


def detect(keys: frozenset[str], files: Files) -> bool:
    if files.weights is None or files.weights.suffix != ".npz":
        return False
    released = any(_BLOCK.match(k) and f"/{_MHA}" in k for k in keys)
    return released and all(k.split("/")[0] in _ROOTS for k in keys)


def load(checkpoint: Checkpoint, hints: Hints) -> tuple[ViTConfig, State]:
    arrays, path = checkpoint.arrays(), checkpoint.files.path
    return reading(path, npz_config, arrays, hints.grid), reading(path, from_npz, arrays)


ADAPTER = Adapter("npz", detect, load)
