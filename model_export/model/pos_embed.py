"""Position embeddings on a new grid: the paper's "2D interpolation of the pre-trained position
embeddings, according to their location in the original image" (§3.2), for fine-tuning or
serving at another resolution.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

PosEmbedResize = Literal["bicubic", "bicubic-antialias", "bicubic-offset", "bilinear"]

# Position-embedding resize modes, as the ecosystem uses them:
#   bicubic-antialias  timm's resample_abs_pos_embed default: PyTorch's antialiased path, i.e. PIL's
#                      cubic kernel (a = -0.5), which also low-pass filters when a grid shrinks;
#                      also transformers' Dinov2WithRegistersModel;
#   bicubic            HF transformers' interpolate_pos_encoding (a = -0.75, no filtering), e.g.
#                      ViTModel and Dinov2Model;
#   bicubic-offset     the original DINOv2 code (facebookresearch/dinov2, the models without
#                      registers): bicubic, no filtering, the grid scaled by (g' + 0.1) / g rather
#                      than sized g', which moves the sample points slightly;
#   bilinear           closest to Google's original vit_jax resize (scipy.ndimage.zoom, order 1).
# The default follows timm, so a model fine-tuned here resizes the way most checkpoints were
# resized, and stays well-behaved if someone serves at a *lower* resolution than it trained at.
# A checkpoint's own family may say otherwise: ViTConfig.pos_embed_resize records which.
DEFAULT_POS_EMBED_RESIZE: PosEmbedResize = "bicubic-antialias"
DINOV2_OFFSET = 0.1  # facebookresearch/dinov2's interpolate_offset


Grid = int | tuple[int, int]  # g (a g×g grid) or (rows, cols)


def resize_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: Grid,
    mode: PosEmbedResize = DEFAULT_POS_EMBED_RESIZE,
    old_grid: Grid | None = None,
    prefix: int = 1,
) -> torch.Tensor:
    """(1, prefix + r·c, D) → (1, prefix + r'·c', D): the patch part resized as an r×c image, the
    `prefix` positions before it ([CLS], DeiT's distillation token; 0 for SigLIP) kept.

    old_grid defaults to the square grid the embedding's length implies.
    """
    head, patches = pos_embed[:, :prefix], pos_embed[:, prefix:]
    if old_grid is None:
        old_grid = math.isqrt(patches.shape[1])
        if old_grid**2 != patches.shape[1]:
            n = patches.shape[1]
            raise ValueError(f"{n} patch position embeddings do not form a square grid")
    (rows, cols), (new_rows, new_cols) = _hw(old_grid), _hw(new_grid)
    if rows * cols != patches.shape[1]:
        n = patches.shape[1]
        raise ValueError(f"{n} patch position embeddings are not a {rows}×{cols} grid")
    if (rows, cols) == (new_rows, new_cols):
        return pos_embed.clone()
    d = patches.shape[-1]
    grid = patches.reshape(1, rows, cols, d).permute(0, 3, 1, 2).float()  # (1, D, r, c)
    if mode == "bicubic-offset":
        scale = ((new_rows + DINOV2_OFFSET) / rows, (new_cols + DINOV2_OFFSET) / cols)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
    else:
        grid = F.interpolate(
            grid,
            size=(new_rows, new_cols),
            mode="bilinear" if mode == "bilinear" else "bicubic",
            antialias=mode == "bicubic-antialias",
            align_corners=False,
        )
    assert grid.shape[-2:] == (new_rows, new_cols), grid.shape
    patches = grid.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, new_rows * new_cols, d)
    return torch.cat([head, patches], dim=1)  # (1, prefix + r'·c', D)


def _hw(grid: Grid) -> tuple[int, int]:
    return (grid, grid) if isinstance(grid, int) else grid
