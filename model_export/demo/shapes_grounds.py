"""Backgrounds for the synthetic shapes: (H, W, 3) uint8 canvases painted from a palette.

A palette is a function rng → one float RGB colour (0-255); the classic demo passes dark colours,
the free-appearance generator dark, bright or saturated ones (shapes_colour.py). Painters:

    flat      one colour
    gradient  a linear blend of two colours along a random direction
    noise     soft colour blobs plus fine grain
    clutter   flat or gradient, strewn with dots and thin lines too small to read as shapes
    texture   stripes, checks or waves between two colours, at low amplitude
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

Palette = Callable[[np.random.Generator], np.ndarray]  # rng → (3,) float RGB, 0-255
Painter = Callable[[int, int, np.random.Generator, Palette], np.ndarray]  # (h, w, rng, palette)


def hsv(
    rng: np.random.Generator,
    n: int,
    value: tuple[float, float],
    saturation: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """(n, 3) float RGB colours of random hue, saturation and brightness (value) in the ranges."""
    h, s, v = rng.random(n), rng.uniform(*saturation, size=n), rng.uniform(*value, size=n)
    rgb = [colorsys.hsv_to_rgb(*c) for c in zip(h, s, v, strict=True)]
    return np.asarray(rgb, np.float32) * 255


def flat(h: int, w: int, rng: np.random.Generator, palette: Palette) -> np.ndarray:
    return np.broadcast_to(palette(rng), (h, w, 3)).astype(np.uint8)


def gradient(h: int, w: int, rng: np.random.Generator, palette: Palette) -> np.ndarray:
    start = palette(rng)
    end = palette(rng)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = yy / max(1, h - 1), xx / max(1, w - 1)  # (H, W) each, in [0, 1]
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / (t.max() - t.min())  # (H, W) in [0, 1] along the direction
    return np.asarray(start + (end - start) * t[..., None], np.uint8)


def noise(h: int, w: int, rng: np.random.Generator, palette: Palette) -> np.ndarray:
    """Soft colour blobs (a coarse random grid upsampled) plus fine per-pixel grain."""
    cells = int(rng.integers(3, 9))
    coarse = palette(rng) + rng.uniform(-40, 40, size=(cells, cells, 3))
    coarse_image = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8), "RGB")
    blobs = np.asarray(coarse_image.resize((w, h), Image.Resampling.BICUBIC), np.float32)
    grain = rng.normal(0, rng.uniform(3, 12), size=(h, w, 3))
    return np.clip(blobs + grain, 0, 255).astype(np.uint8)


def clutter(h: int, w: int, rng: np.random.Generator, palette: Palette) -> np.ndarray:
    base = flat(h, w, rng, palette) if rng.random() < 0.5 else gradient(h, w, rng, palette)
    image = Image.fromarray(base, "RGB")
    draw = ImageDraw.Draw(image)
    scale = min(h, w) / 224  # clutter sizes are set for 224 px and scale with the image
    for _ in range(int(rng.integers(10, 40))):
        x, y = rng.uniform(0, (w, h))
        r = max(0.5, rng.uniform(0.5, 2.5) * scale)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_clutter_colour(rng))
    for _ in range(int(rng.integers(2, 8))):
        x0, y0, x1, y1 = rng.uniform(0, (w, h, w, h))
        width = max(1, round(rng.uniform(1, 2) * scale))
        draw.line((x0, y0, x1, y1), fill=_clutter_colour(rng), width=width)
    return np.asarray(image)


def _clutter_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in hsv(rng, 1, (0.2, 0.8))[0])  # mid-tones: seen, yet not a shape
    return r, g, b


def texture(h: int, w: int, rng: np.random.Generator, palette: Palette) -> np.ndarray:
    """Stripes, checks or waves of 4-24 px (at 224) between two colours, 15-45% of the way."""
    base, other = palette(rng), palette(rng)
    period = rng.uniform(4, 24) * min(h, w) / 224
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    u = (xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period  # (H, W)
    v = (yy * math.cos(angle) - xx * math.sin(angle)) * 2 * math.pi / period
    kind = int(rng.integers(3))
    if kind == 0:
        t = (np.sin(u) > 0).astype(np.float64)  # stripes
    elif kind == 1:
        t = ((np.sin(u) > 0) ^ (np.sin(v) > 0)).astype(np.float64)  # checks
    else:
        t = 0.5 + 0.5 * np.sin(u) * np.sin(v)  # waves
    t *= rng.uniform(0.15, 0.45)  # a ground, not a picture: the shape must stay the object
    return np.asarray(base + (other - base) * t[..., None], np.uint8)


PAINTERS: dict[str, Painter] = {
    "flat": flat,
    "gradient": gradient,
    "noise": noise,
    "clutter": clutter,
    "texture": texture,
}
