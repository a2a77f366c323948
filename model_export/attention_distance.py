"""Mean attention distance (the paper's Figure 7 right, after Appendix D.7), in one place.

For each layer and head: for every query patch, the sum over key patches of attention weight ×
the distance in pixels between the two patch centres, averaged over the queries. [CLS] is left
out as query and as key, and each query's remaining weights are renormalised to sum to 1, so the
figure is a distance between patches only. It is the receptive field a head looks over, the
analogue of a CNN layer's: small for local heads, about a third of the image side for heads that
attend uniformly. vit-inspect computes it from PyTorch, and the explain graph computes it in-graph
with this same function.
"""

from __future__ import annotations

import math

import torch


def patch_distances(grid: int, stride: float) -> torch.Tensor:
    """(N, N) Euclidean distances in pixels between the centres of a grid×grid patch layout.

    Patches are numbered row-major, as PatchEmbed flattens them; stride is pixels per patch.
    """
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    centres = torch.stack([rows, cols], dim=-1).reshape(-1, 2).float() * stride  # (N, 2)
    offsets = centres[:, None] - centres[None]  # (N, N, 2); the half-patch offset cancels
    return offsets.square().sum(dim=-1).sqrt()  # (N, N)


def attention_distance(weights: torch.Tensor, image_size: int) -> torch.Tensor:
    """weights (B, L, H, T, T), T = 1 + N with [CLS] first → (B, L, H) mean distance in pixels.

    The grid comes from the token count, so the pixel stride is image_size / grid whatever
    produced the tokens (P for a plain ViT, the backbone's total stride for a hybrid).
    """
    n = weights.shape[-1] - 1
    grid = math.isqrt(n)
    if grid * grid != n:
        raise ValueError(f"{n} patch tokens do not form a square grid")
    patches = weights[..., 1:, 1:]  # (B, L, H, N, N): patch queries over patch keys
    patches = patches / patches.sum(dim=-1, keepdim=True)  # each query's weights sum to 1 again
    dist = patch_distances(grid, image_size / grid).to(weights.dtype)  # (N, N)
    per_query = (patches * dist).sum(dim=-1)  # (B, L, H, N)
    return per_query.mean(dim=-1)  # (B, L, H)
