"""Realistic request images for the benchmarks: 640×480 photo-like JPEGs (quality 90).

Smooth light, a few shapes, fine-grained noise and a slight blur, so the JPEGs weigh what camera
pictures of that size weigh (tens of kB) and decode at the same cost.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 640, 480


def photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH] / max(WIDTH, HEIGHT)  # (H, W) each
    light = rng.uniform(60, 200, 3) + rng.uniform(-80, 80, 3) * (x + y)[..., None] / 2
    image = Image.fromarray(np.clip(light, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = int(rng.integers(0, WIDTH - 80)), int(rng.integers(0, HEIGHT - 80))
        w, h = int(rng.integers(40, 300)), int(rng.integers(40, 240))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x0 + w, y0 + h), fill)
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.5)), np.float32)
    pixels += rng.normal(0, 6, pixels.shape)  # sensor-like grain
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def photos(count: int, seed: int = 0) -> list[bytes]:
    return [photo(seed + i) for i in range(count)]
