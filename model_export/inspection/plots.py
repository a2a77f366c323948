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
    fig = Figure(figsize=(cols * 1.1, rows * 1.1 + 0.5), dpi=DPI, layout="constrained")
    fig.suptitle(f"RGB embedding filters (first {k} principal components)", fontsize=9)
    for i, component in enumerate(components):
        ax = fig.add_subplot(rows, cols, i + 1)
        tile = component.transpose(1, 2, 0)  # (P, P, 3)
        lo, hi = tile.min(), tile.max()  # each component's own range: its sign is arbitrary
        ax.imshow((tile - lo) / (hi - lo) if hi > lo else np.zeros_like(tile))
        ax.set_axis_off()
    fig.savefig(path, bbox_inches="tight")


def similarity_mosaic(similarity: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(N, N) → one image: patch (r, c)'s rows×cols map at tile (r, c), one NaN line between."""
    mosaic = np.full((rows * (rows + 1) - 1, cols * (cols + 1) - 1), np.nan, np.float32)
    maps = similarity.reshape(rows, cols, rows, cols)  # (row, col, key row, key col)
    for r in range(rows):
        for c in range(cols):
            top, left = r * (rows + 1), c * (cols + 1)
            mosaic[top : top + rows, left : left + cols] = maps[r, c]
    return mosaic


def draw_position_similarity(similarity: np.ndarray, rows: int, cols: int, path: Path) -> None:
    fig = Figure(figsize=(8.4, 7.4), dpi=DPI)  # a 14×14 grid of 14×14 maps stays readable
    ax = fig.add_subplot()
    mosaic = similarity_mosaic(similarity, rows, cols)
    image = ax.imshow(mosaic, cmap="viridis", vmin=-1, vmax=1)
    for axis, n, label in (
        (ax.xaxis, cols, "Input patch column"),
        (ax.yaxis, rows, "Input patch row"),
    ):
        ticks = np.arange(n) * (n + 1) + (n - 1) / 2  # tile centres
        step = max(1, n // 10)  # about ten labels per axis
        axis.set_ticks(ticks[::step], [str(i + 1) for i in range(0, n, step)])
        axis.set_label_text(label)
    ax.set_title("Position embedding similarity", fontsize=10)
    fig.colorbar(image, ax=ax, label="Cosine similarity")
    fig.savefig(path, bbox_inches="tight")


def draw_attention_distance(
    distance: np.ndarray, image_size: int | tuple[int, int], uniform: float, path: Path
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
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    ax.set_ylim(0, max(max(h, w) * 0.75, float(distance.max()) * 1.1))
    size = f"{h}" if h == w else f"{h}×{w}"
    ax.set_title(f"Mean attention distance ({size} px input)", fontsize=10)
    if heads <= 16:
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.savefig(path, bbox_inches="tight")


def draw_rollout(
    names: Sequence[str], inputs: Sequence[Image.Image], overlays: Sequence[bytes], path: Path
) -> None:
    """Each image beside the service's own /attention picture of it (a PNG, as /attention sends)."""
    rows = len(names)
    fig = Figure(figsize=(5.0, 2.5 * rows + 0.3), dpi=DPI, layout="constrained")
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
