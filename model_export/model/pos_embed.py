"""Position embeddings on a new grid: the paper's "2D interpolation of the pre-trained position
embeddings, according to their location in the original image" (§3.2), for fine-tuning or
serving at another resolution.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

PosEmbedResize = Literal["bicubic", "bicubic-antialias", "bilinear"]

# Position-embedding resize modes, as the ecosystem uses them:
#   bicubic-antialias  timm's resample_abs_pos_embed default: PyTorch's antialiased path, i.e. PIL's
#                      cubic kernel (a = -0.5), which also low-pass filters when a grid shrinks;
#   bicubic            HF transformers' interpolate_pos_encoding (a = -0.75, no filtering);
#   bilinear           closest to Google's original vit_jax resize (scipy.ndimage.zoom, order 1).
# The default follows timm, so a model fine-tuned here resizes the way most checkpoints were
# resized, and stays well-behaved if someone serves at a *lower* resolution than it trained at.
DEFAULT_POS_EMBED_RESIZE: PosEmbedResize = "bicubic-antialias"


Grid = int | tuple[int, int]  # g (a g×g grid) or (rows, cols)


def resize_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: Grid,
    mode: PosEmbedResize = DEFAULT_POS_EMBED_RESIZE,
    old_grid: Grid | None = None,
) -> torch.Tensor:
    """(1, 1 + r·c, D) → (1, 1 + r'·c', D): the patch part resized as an r×c image, [CLS] kept.

    old_grid defaults to the square grid the embedding's length implies.
    """
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
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
    grid = patches.reshape(1, rows, cols, d).permute(0, 3, 1, 2)  # (1, D, r, c)
    grid = F.interpolate(
        grid.float(),
        size=(new_rows, new_cols),
        mode="bilinear" if mode == "bilinear" else "bicubic",
        antialias=mode == "bicubic-antialias",
        align_corners=False,
    ).to(pos_embed.dtype)
    patches = grid.permute(0, 2, 3, 1).reshape(1, new_rows * new_cols, d)  # (1, r'·c', D)
    return torch.cat([cls, patches], dim=1)


def _hw(grid: Grid) -> tuple[int, int]:
    return (grid, grid) if isinstance(grid, int) else grid
