"""The four PNG figures of vit-inspect, drawn with matplotlib's object API (Agg, no pyplot state).

Figure 7 of the paper, left to right: embedding filters, position-embedding similarity, mean
attention distance; Figure 6: attention rollout over input images.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

DPI = 100


def draw_filters(components: np.ndarray, path: Path) -> None:
    """components (k, 3, P, P): principal components of the patch filters, each an RGB tile."""
    k = len(components)
    cols = min(k, 7)  # the paper's 4 × 7 layout for its 28 components
    rows = math.ceil(k / cols)
    fig = Figure(figsize=(cols * 1.1, rows * 1.1 + 0.5), dpi=DPI)
    fig.suptitle(f"RGB embedding filters (first {k} principal components)", fontsize=9)
    for i, component in enumerate(components):
        ax = fig.add_subplot(rows, cols, i + 1)
        tile = component.transpose(1, 2, 0)  # (P, P, 3)
        lo, hi = tile.min(), tile.max()  # each component's own range: its sign is arbitrary
        ax.imshow((tile - lo) / (hi - lo) if hi > lo else np.zeros_like(tile))
        ax.set_axis_off()
    fig.savefig(path, bbox_inches="tight")


def similarity_mosaic(similarity: np.ndarray, grid: int) -> np.ndarray:
    """(N, N) → (g·(g+1)−1, g·(g+1)−1): patch (r, c)'s g×g map at tile (r, c), NaN gaps between."""
    side = grid * (grid + 1) - 1
    mosaic = np.full((side, side), np.nan, np.float32)
    maps = similarity.reshape(grid, grid, grid, grid)  # (row, col, key row, key col)
    for r in range(grid):
        for c in range(grid):
            top, left = r * (grid + 1), c * (grid + 1)
            mosaic[top : top + grid, left : left + grid] = maps[r, c]
    return mosaic


def draw_position_similarity(similarity: np.ndarray, grid: int, path: Path) -> None:
    fig = Figure(figsize=(6.4, 5.6), dpi=DPI)
    ax = fig.add_subplot()
    image = ax.imshow(similarity_mosaic(similarity, grid), cmap="viridis", vmin=-1, vmax=1)
    ticks = np.arange(grid) * (grid + 1) + (grid - 1) / 2  # tile centres
    step = max(1, grid // 10)  # about ten labels per axis
    ax.set_xticks(ticks[::step], [str(i + 1) for i in range(0, grid, step)])
    ax.set_yticks(ticks[::step], [str(i + 1) for i in range(0, grid, step)])
    ax.set_xlabel("Input patch column")
    ax.set_ylabel("Input patch row")
    ax.set_title("Position embedding similarity", fontsize=10)
    fig.colorbar(image, ax=ax, label="Cosine similarity")
    fig.savefig(path, bbox_inches="tight")


def draw_attention_distance(
    distance: np.ndarray, image_size: int, uniform: float, path: Path
) -> None:
    """distance (L, H) in pixels: one point per head, against the layer it belongs to.

    uniform: the distance of a head that attends to every patch equally, drawn for reference.
    """
    depth, heads = distance.shape
    fig = Figure(figsize=(5.2, 4.2), dpi=DPI)
    ax = fig.add_subplot()
    layers = np.arange(1, depth + 1)
    for h in range(heads):
        ax.scatter(layers, distance[:, h], s=18, label=f"head {h + 1}")
    ax.axhline(uniform, color="grey", linestyle="--", linewidth=1, label="uniform attention")
    ax.set_xlabel("Network depth (layer)")
    ax.set_ylabel("Mean attention distance (pixels)")
    ax.set_xticks(layers)
    ax.set_ylim(0, max(image_size * 0.75, float(distance.max()) * 1.1))
    ax.set_title(f"Mean attention distance ({image_size} px input)", fontsize=10)
    if heads <= 16:
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.savefig(path, bbox_inches="tight")


def draw_rollout(
    names: Sequence[str], inputs: Sequence[Image.Image], overlays: Sequence[bytes], path: Path
) -> None:
    """Each image beside the service's own /attention picture of it (a PNG, as /attention sends)."""
    rows = len(names)
    fig = Figure(figsize=(5.0, 2.5 * rows + 0.3), dpi=DPI)
    fig.suptitle("Attention rollout (input | attention)", fontsize=10)
    for i, (name, image, png) in enumerate(zip(names, inputs, overlays, strict=True)):
        left = fig.add_subplot(rows, 2, 2 * i + 1)
        left.imshow(image)
        left.set_title(name, fontsize=7)
        right = fig.add_subplot(rows, 2, 2 * i + 2)
        right.imshow(Image.open(io.BytesIO(png)))
        for ax in (left, right):
            ax.set_axis_off()
    fig.savefig(path, bbox_inches="tight")
