"""Tiny checkpoints for the loader tests: a random ViT and the inverse mappings to timm and npz."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pytest
import torch
from torch import nn

from model_export.model.vit import ViT, ViTConfig

M = TypeVar("M", bound=nn.Module)

TINY = ViTConfig(
    image_size=32, patch_size=8, dim=32, depth=2, heads=4, mlp_dim=64, num_classes=5,
    labels=("ant", "bee", "cat", "dog", "eel"),
)  # fmt: skip


def _randomise(model: M, seed: int = 0) -> M:
    """Random values in every parameter, LayerNorms, biases and [CLS] included.

    Default init leaves those at 1 or 0, where a mapping that dropped or swapped them would still
    produce the same outputs; random values make every tensor count.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


@pytest.fixture
def tiny_config() -> ViTConfig:
    return TINY


@pytest.fixture
def randomise() -> Callable[..., nn.Module]:
    return _randomise


@pytest.fixture
def random_vit() -> ViT:
    return _randomise(ViT(TINY))


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # (B, C, H, W)


def _to_timm(model: ViT) -> dict[str, torch.Tensor]:
    # Our names are timm's, except timm's representation layer lives in pre_logits.fc.
    return {k.replace("pre_logits.", "pre_logits.fc."): v for k, v in model.state_dict().items()}


def _to_npz(model: ViT) -> dict[str, np.ndarray]:
    """Google's Flax layout: Dense kernels (in, out), attention kernels split per head."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    c = model.config
    d, h = c.dim, c.heads
    a = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),  # OIHW -> HWIO
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
    }
    for name in ("head", "pre_logits"):
        if f"{name}.weight" in sd:
            a[f"{name}/kernel"] = sd[f"{name}.weight"].T
            a[f"{name}/bias"] = sd[f"{name}.bias"]
    for i in range(c.depth):
        src, dst = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha = dst + "MultiHeadDotProductAttention_1/"
        for ours, theirs in (("norm1", "LayerNorm_0"), ("norm2", "LayerNorm_2")):
            a[f"{dst}{theirs}/scale"] = sd[f"{src}{ours}.weight"]
            a[f"{dst}{theirs}/bias"] = sd[f"{src}{ours}.bias"]
        for ours, theirs in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
            a[f"{dst}MlpBlock_3/{theirs}/kernel"] = sd[f"{src}mlp.{ours}.weight"].T
            a[f"{dst}MlpBlock_3/{theirs}/bias"] = sd[f"{src}mlp.{ours}.bias"]
        weights = np.split(sd[f"{src}attn.qkv.weight"], 3)  # 3 × (D_out, D_in)
        biases = np.split(sd[f"{src}attn.qkv.bias"], 3)
        for name, w, b in zip(("query", "key", "value"), weights, biases, strict=True):
            a[f"{mha}{name}/kernel"] = w.T.reshape(d, h, d // h)
            a[f"{mha}{name}/bias"] = b.reshape(h, d // h)
        a[f"{mha}out/kernel"] = sd[f"{src}attn.proj.weight"].T.reshape(h, d // h, d)
        a[f"{mha}out/bias"] = sd[f"{src}attn.proj.bias"]
    return a


@pytest.fixture
def to_timm() -> Callable[[ViT], dict[str, torch.Tensor]]:
    return _to_timm


@pytest.fixture
def to_npz() -> Callable[[ViT], dict[str, np.ndarray]]:
    return _to_npz
