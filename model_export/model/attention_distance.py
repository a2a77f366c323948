"""Mean attention distance (the paper's Figure 7 right, after Appendix D.7), in one place.

For each layer and head: for every query patch, the sum over key patches of attention weight ×
the distance in pixels between the two patch centres, averaged over the queries. The tokens
before the patches ([CLS], DeiT's distillation token, DINOv2's registers) are left out as query
and as key, and each query's remaining weights are renormalised to sum to 1, so the figure is a
distance between patches only. It is the receptive field a head looks over, the analogue of a
CNN layer's: small for local heads, near the uniform-attention value for heads
that look everywhere. The explain graph computes it with this function, and vit-inspect runs that
graph: in PyTorch for a checkpoint, on ONNX Runtime for a bundle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from model_export.model.vit import ViTConfig

Layout = tuple[int, int, int]  # (rows, cols) of patch tokens and the input pixels per token side


def token_layout(config: ViTConfig) -> Layout:
    """A ViTConfig's token layout: its (rows, cols) grid and its stride (P, or for a hybrid the
    backbone's stride × P)."""
    rows, cols = config.grid
    return rows, cols, config.stride


def patch_distances(layout: Layout) -> torch.Tensor:
    """(N, N) Euclidean distances in pixels between the patch centres, patches row-major as
    PatchEmbed flattens them."""
    rows, cols, stride = layout
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    centres = torch.stack([r, c], dim=-1).reshape(-1, 2).float() * stride  # (N, 2)
    offsets = centres[:, None] - centres[None]  # (N, N, 2); the half-patch offset cancels
    return offsets.square().sum(dim=-1).sqrt()  # (N, N)


def attention_distance(weights: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """weights (B, L, H, T, T), T = P + N with the P prefix tokens first, and patch_distances
    (N, N) → (B, L, H) mean attention distance in pixels."""
    prefix = weights.shape[-1] - len(distances)
    if prefix < 0:
        raise ValueError(f"{weights.shape[-1]} tokens for {len(distances)} patch positions")
    patches = weights[..., prefix:, prefix:]  # (B, L, H, N, N): patch queries over patch keys
    patches = patches / patches.sum(dim=-1, keepdim=True)  # each query's weights sum to 1 again
    per_query = (patches * distances.to(weights.dtype)).sum(dim=-1)  # (B, L, H, N)
    return per_query.mean(dim=-1)  # (B, L, H)
