"""The service's image transform (vit_core.images), configured from a model's ViTConfig.

Training, the export's parity check and model.json's "preprocess" all take their Preprocess from
`bundle_preprocess`, and their pixels from vit_core.images: one recipe, one implementation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from model_export.model.vit import ViTConfig
from vit_core.bundle import LEGACY_PIXELS, PixelFormat, Preprocess
from vit_core.images import Preprocessor, transform

# Training reads local files the user chose, not requests from strangers, so the limit is PIL's own
# (it warns about decompression bombs above ~89.5 MP) rather than the service's 40 MP default.
TRAINING_MAX_PIXELS = 89_000_000


def bundle_preprocess(config: ViTConfig) -> Preprocess:
    """What model.json says about preprocessing: the weights' own mean, std, filter and resize."""
    return Preprocess(
        mean=config.mean,
        std=config.std,
        interpolation=config.interpolation,
        resize_mode=config.resize_mode,
        crop_pct=config.crop_pct,
    )


def preprocessor(config: ViTConfig, max_pixels: int = TRAINING_MAX_PIXELS) -> Preprocessor:
    """Image file bytes → (3, H, W) float32, exactly as the service prepares a request."""
    return Preprocessor(bundle_preprocess(config), config.image_size, max_pixels)


def array_pixels(
    images: Sequence[np.ndarray], config: ViTConfig, pixels: PixelFormat = LEGACY_PIXELS
) -> np.ndarray:
    """(h, w, 3) uint8 RGB arrays of any size → a batch as `pixels` says (default (B, 3, H, W)
    float32 normalised), through the same transform a decoded request goes through (so crop-mode
    bundles are checked on cropped pixels)."""
    preprocess = bundle_preprocess(config)
    rgb = (Image.fromarray(im) for im in images)  # (H, W, 3) uint8 → mode RGB
    return np.stack([transform(im, preprocess, config.image_size, pixels)[0] for im in rgb])
