"""SigLIP's image embedding: multi-head attention pooling (MAP), a learned query over the tokens.

Where a ViT reads its class token, SigLIP (which has none) pools the encoder's normalised output
with one more attention layer whose single query is learned (the "probe", timm's latent), then a
residual MLP, as big_vision's MAPHead does:

    o = MHA(q = latent, k = v = LN(z_L))          (B, 1, D)
    y = o + MLP(LN(o))                            (B, D), the pooled embedding /embed publishes

The attention weights of that query over the patches are what /attention shows for such a model:
which patches the embedding is made of. Names follow timm's AttentionPoolLatent (latent, q, kv,
proj, norm, mlp), so its state dict maps straight; transformers' nn.MultiheadAttention packs
q, k, v in one in_proj that splits into q and kv.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class PoolConfig(Protocol):
    """What the head reads of the model's config (vit.ViTConfig holds these fields): a structural
    type, so this module needs no import of the ViT that owns it."""

    @property
    def dim(self) -> int: ...
    @property
    def heads(self) -> int: ...
    @property
    def qkv_bias(self) -> bool: ...
    @property
    def eps(self) -> float: ...


class AttentionPool(nn.Module):
    def __init__(self, config: PoolConfig, mlp: nn.Module) -> None:
        super().__init__()
        d = config.dim
        self.heads = config.heads
        self.latent = nn.Parameter(torch.zeros(1, 1, d))  # the learned query
        self.q = nn.Linear(d, d, bias=config.qkv_bias)
        self.kv = nn.Linear(d, 2 * d, bias=config.qkv_bias)  # k rows first, then v
        self.proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d, eps=config.eps)
        self.mlp = mlp  # the encoder's MLP kind, as both timm and transformers build it
        nn.init.trunc_normal_(self.latent, std=d**-0.5)  # as timm's: a zero query attends evenly

    def forward(
        self, x: torch.Tensor, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, N, D), normalised → y (B, D), and on request the weights (B, H, N).

        One query: its (B, H, 1, N) weights cost nothing, so both paths compute them explicitly."""
        B, N, D = x.shape
        h = self.heads
        q = self.q(self.latent).reshape(1, 1, h, D // h).transpose(1, 2)  # (1, H, 1, D/H)
        k, v = (
            t.reshape(B, N, h, D // h).transpose(1, 2)  # (B, H, N, D/H)
            for t in self.kv(x).chunk(2, dim=-1)
        )
        weights = (q @ k.transpose(-2, -1) * (D // h) ** -0.5).softmax(dim=-1)  # (B, H, 1, N)
        o = self.proj((weights @ v).transpose(1, 2).reshape(B, 1, D))  # (B, 1, D)
        o = o + self.mlp(self.norm(o))
        return o[:, 0], weights[:, :, 0] if return_weights else None  # (B, D), (B, H, N)
