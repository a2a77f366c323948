"""Attention rollout as a map over the patch grid, and as a heat-map drawn over the input image.

The explain graph computes the rollout (Abnar & Zuidema 2020) itself: for each image, the [CLS]
token's row over the N = rows·cols patches. Here it becomes a rows×cols grid (row-major, as the
patches are numbered; a hybrid's patches tile its backbone's feature map, which covers the image
the same way) scaled to [0, 1], and optionally a PNG.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from vit_core.geometry import Box

OVERLAY_ALPHA = 0.5
# A perceptual dark-to-bright ramp (inferno's anchor colours), low attention dark, high bright.
_ANCHORS = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
     [250, 193, 39], [252, 255, 164]],
    np.float32,
)  # fmt: skip
_LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), c) for c in _ANCHORS.T],
    axis=1,
).astype(np.uint8)  # (256, 3)


def rollout_grid(rollout: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N,) rollout → (rows, cols) scaled to [0, 1]; a flat map (no preference) is all zeros."""
    m = rollout.reshape(grid).astype(np.float64)
    lo, hi = m.min(), m.max()
    scaled = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    return scaled.astype(np.float32)


def overlay_png(image: Image.Image, box: Box, heat: np.ndarray) -> bytes:
    """The picture (images.overview's, at most 1024 px a side) with the (rows, cols) map in [0, 1]
    laid over the region the model saw, as PNG."""
    left, top, right, bottom = (round(v) for v in box)
    width, height = max(1, right - left), max(1, bottom - top)
    level = Image.fromarray(np.rint(heat * 255).astype(np.uint8), "L")
    level = level.resize((width, height), Image.Resampling.BICUBIC)  # smooth, not blocky
    colour = Image.fromarray(_LUT[np.asarray(level)], "RGB")  # (h, w, 3)
    region = image.crop((left, top, left + width, top + height))
    out = image.copy()
    out.paste(Image.blend(region, colour, OVERLAY_ALPHA), (left, top))
    buffer = io.BytesIO()
    out.save(buffer, "PNG", compress_level=1)  # fast; the answer is transient
    return buffer.getvalue()
