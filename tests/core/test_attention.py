"""Rollout grids and heat-map overlays."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from vit_core.attention import overlay_png, rollout_grid


def test_rollout_grid_is_row_major_and_scaled_to_unit_range() -> None:
    rollout = np.array([0.1, 0.2, 0.3, 0.5], np.float32)  # 2×2 patches, numbered row-major
    grid = rollout_grid(rollout, (2, 2))
    np.testing.assert_allclose(grid, [[0.0, 0.25], [0.5, 1.0]], atol=1e-6)
    assert not rollout_grid(np.full(4, 0.25, np.float32), (2, 2)).any()  # flat: no preference


def test_overlay_keeps_the_picture_size_and_heats_the_hot_patch() -> None:
    image = Image.new("RGB", (80, 40), (128, 128, 128))
    heat = np.array([[0.0, 0.0], [0.0, 1.0]], np.float32)  # bottom-right is hot
    out = Image.open(io.BytesIO(overlay_png(image, (0, 0, 80, 40), heat)))
    assert out.format == "PNG" and out.size == (80, 40)
    hot, cold = np.asarray(out)[35, 75].astype(int), np.asarray(out)[5, 5].astype(int)
    assert hot.sum() > cold.sum()  # the map's bright end over the hot patch, dark over the cold


def test_overlay_covers_only_the_cropped_region() -> None:
    image = Image.new("RGB", (100, 50), (128, 128, 128))
    out = np.asarray(
        Image.open(io.BytesIO(overlay_png(image, (25, 0, 75, 50), np.ones((2, 2), np.float32))))
    )
    assert (out[:, :20] == 128).all() and (out[:, 80:] == 128).all()  # outside the box: untouched
    assert (out[:, 30:70] != 128).any()
