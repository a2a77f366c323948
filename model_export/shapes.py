"""Synthetic shapes: one filled geometric shape per image, on a varied background, drawn with PIL.

The demo model's data set, and the service tests' source of real images with a known answer:

    image, bbox = draw_shape("star", size=224, rng=7)        # in memory, deterministic from 7
    generate("data/shapes", n_per_class=500, seed=0)          # root/<class>/<n>.jpg on disk

Every image is drawn from its own generator seeded by (seed, class index, n), so a data set is
the same whatever order it is written in, and a different seed gives images never seen before.

Colours: any hue and saturation, but the shape is always light and the ground darker, by a
margin of brightness over 95% of the pixels it covers. In trials with the contrast's polarity
free (or carried by hue alone) the demo's small ViT was still at chance after 40k+ training
images; with the polarity fixed it takes off within 20k, so geometry is the cue it learns.
"""

from __future__ import annotations

import argparse
import colorsys
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Head order of every model trained on these images.
CLASSES = ("circle", "square", "triangle", "star", "cross", "hexagon")
BACKGROUNDS = ("flat", "gradient", "noise", "clutter")
FORMATS = ("jpg", "png")

Rng = np.random.Generator | int | None
BBox = tuple[int, int, int, int]  # (left, top, right, bottom) in pixels, right/bottom exclusive

_SUPERSAMPLE = 4  # the mask is drawn 4× larger and box-filtered down: anti-aliased edges
_RADIUS = (0.15, 0.42)  # circumradius as a fraction of the image side: never tiny, never cut off
_MIN_CONTRAST = 80.0  # brightness (0-255) the shape keeps above (almost all) it covers


def draw_shape(
    kind: str, size: int = 224, rng: Rng = None, background: str | None = None
) -> tuple[Image.Image, BBox]:
    """One RGB size×size image of a `kind` shape and its pixel bounding box.

    rng is a numpy Generator or an int seed (None: fresh entropy). background is one of
    BACKGROUNDS, or None to pick one at random.
    """
    if kind not in CLASSES:
        raise ValueError(f"unknown shape {kind!r}; choose from {', '.join(CLASSES)}")
    if background is not None and background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; choose from {', '.join(BACKGROUNDS)}")
    if size < 16:
        raise ValueError(f"size {size} is too small to draw a recognisable shape (minimum 16)")
    rng = np.random.default_rng(rng)
    background = background or str(rng.choice(BACKGROUNDS))
    canvas = _BACKGROUND_PAINTERS[background](size, rng)  # (H, W, 3) uint8
    mask = _shape_mask(kind, size, rng)  # (H, W) uint8 coverage, 255 = fully inside
    colour = _contrasting_colour(canvas, mask, rng)
    alpha = mask[..., None].astype(np.float32) / 255.0  # (H, W, 1)
    pixels = canvas * (1.0 - alpha) + np.asarray(colour, np.float32) * alpha
    image = Image.fromarray(np.rint(pixels).astype(np.uint8), "RGB")
    left, top, right, bottom = Image.fromarray(mask).getbbox() or (0, 0, 0, 0)
    return image, (left, top, right, bottom)


def generate(
    root: str | Path,
    n_per_class: int,
    seed: int = 0,
    size: int = 224,
    fmt: str = "jpg",
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write root/<class>/<n>.<fmt> for every class; returns the paths written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    paths = []
    for label, kind in enumerate(CLASSES):
        folder = Path(root) / kind
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(n_per_class):
            image, _ = draw_shape(kind, size, np.random.default_rng([seed, label, n]))
            path = folder / f"{n:05d}.{fmt}"
            # JPEG at quality 90 adds the mild block artefacts real uploads have.
            image.save(path, quality=90)  # PNG ignores quality
            paths.append(path)
            if progress:
                progress(1)
    return paths


# --- shapes -------------------------------------------------------------------------------


def _regular(n: int, radius: float, angle: float) -> np.ndarray:
    """(n, 2) vertices of a regular n-gon around the origin."""
    t = angle + np.arange(n) * 2 * math.pi / n
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _star(radius: float, angle: float) -> np.ndarray:
    """(10, 2) vertices of a five-pointed star: points and inner corners alternate."""
    t = angle + np.arange(10) * math.pi / 5
    r = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cross(radius: float, angle: float) -> np.ndarray:
    """(12, 2) vertices of a plus sign whose arm tips lie on the circumcircle."""
    half_width = 1 / 3  # arm half-width relative to arm length
    a = radius / math.hypot(1, half_width)
    w = a * half_width
    quarter = np.array([[a, -w], [a, w], [w, w]])  # one arm's tip and the inner corner after it
    turn = np.array([[0.0, 1.0], [-1.0, 0.0]])  # row vectors times this rotate by +90°
    arms = [quarter @ np.linalg.matrix_power(turn, k) for k in range(4)]
    return _rotate(np.concatenate(arms), angle)


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, s], [-s, c]])
    return np.asarray(points @ rotation)


_OUTLINES: dict[str, Callable[[float, float], np.ndarray]] = {
    "square": lambda r, a: _regular(4, r, a),
    "triangle": lambda r, a: _regular(3, r, a),
    "star": _star,
    "cross": _cross,
    "hexagon": lambda r, a: _regular(6, r, a),
}


def _shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) uint8 coverage of one shape with random size, position and rotation."""
    radius = rng.uniform(*_RADIUS) * size
    centre = rng.uniform(radius + 1, size - radius - 1, size=2)  # whole shape inside the frame
    angle = rng.uniform(0, 2 * math.pi)
    big = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    if kind == "circle":
        x, y = centre * _SUPERSAMPLE
        r = radius * _SUPERSAMPLE
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    else:
        points = (_OUTLINES[kind](radius, angle) + centre) * _SUPERSAMPLE
        draw.polygon([tuple(p) for p in points], fill=255)
    return np.asarray(big.resize((size, size), Image.Resampling.BOX))


def _contrasting_colour(
    canvas: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[int, int, int]:
    """A random light colour, brighter than 95% of the background it covers by a clear margin."""
    covered = _luma(canvas[mask > 0].astype(np.float32))  # (M,); never empty: radius >= 2.4 px
    floor = np.percentile(covered, 95)  # the shape must outshine all but the brightest 5%
    candidates = np.concatenate([_light(rng, 64), [[255.0, 255.0, 255.0]]])  # (65, 3)
    margin = _luma(candidates) - floor  # (65,)
    good = np.flatnonzero(margin >= _MIN_CONTRAST)
    best = good[0] if len(good) else int(np.argmax(margin))  # white, at worst
    r, g, b = (int(v) for v in candidates[best])
    return r, g, b


# --- backgrounds --------------------------------------------------------------------------


def _luma(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) → (...): perceived brightness (ITU-R BT.601), 0-255."""
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def _hsv(rng: np.random.Generator, n: int, value: tuple[float, float]) -> np.ndarray:
    """(n, 3) float RGB colours of random hue and saturation, brightness drawn from value."""
    h, s, v = rng.random(n), rng.random(n), rng.uniform(*value, size=n)
    rgb = [colorsys.hsv_to_rgb(*hsv) for hsv in zip(h, s, v, strict=True)]
    return np.asarray(rgb, np.float32) * 255


def _light(rng: np.random.Generator, n: int) -> np.ndarray:
    return _hsv(rng, n, (0.75, 1.0))


def _dark(rng: np.random.Generator) -> np.ndarray:
    """A background colour: any hue, kept darker than the shapes drawn on top of it."""
    return np.asarray(_hsv(rng, 1, (0.0, 0.45))[0])


def _flat(size: int, rng: np.random.Generator) -> np.ndarray:
    return np.broadcast_to(_dark(rng), (size, size, 3)).astype(np.uint8)


def _gradient(size: int, rng: np.random.Generator) -> np.ndarray:
    """A linear blend between two colours along a random direction."""
    start = _dark(rng)
    end = _dark(rng)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)  # (H, W) each, in [0, 1]
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / (t.max() - t.min())  # (H, W) in [0, 1] along the direction
    return np.asarray(start + (end - start) * t[..., None], np.uint8)


def _noise(size: int, rng: np.random.Generator) -> np.ndarray:
    """Soft colour blobs (a coarse random grid upsampled) plus fine per-pixel grain."""
    cells = int(rng.integers(3, 9))
    coarse = _dark(rng) + rng.uniform(-40, 40, size=(cells, cells, 3))
    coarse_image = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8), "RGB")
    blobs = np.asarray(coarse_image.resize((size, size), Image.Resampling.BICUBIC), np.float32)
    grain = rng.normal(0, rng.uniform(3, 12), size=(size, size, 3))
    return np.clip(blobs + grain, 0, 255).astype(np.uint8)


def _clutter(size: int, rng: np.random.Generator) -> np.ndarray:
    """A flat or gradient ground strewn with dots and thin lines, too small to read as shapes."""
    base = _flat(size, rng) if rng.random() < 0.5 else _gradient(size, rng)
    image = Image.fromarray(base, "RGB")
    draw = ImageDraw.Draw(image)
    scale = size / 224  # clutter sizes are set for 224 px and scale with the image
    for _ in range(int(rng.integers(10, 40))):
        x, y = rng.uniform(0, size, size=2)
        r = max(0.5, rng.uniform(0.5, 2.5) * scale)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_clutter_colour(rng))
    for _ in range(int(rng.integers(2, 8))):
        x0, y0, x1, y1 = rng.uniform(0, size, size=4)
        width = max(1, round(rng.uniform(1, 2) * scale))
        draw.line((x0, y0, x1, y1), fill=_clutter_colour(rng), width=width)
    return np.asarray(image)


def _clutter_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in _hsv(rng, 1, (0.2, 0.8))[0])  # mid-tones: seen, yet not a shape
    return r, g, b


_BACKGROUND_PAINTERS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "flat": _flat,
    "gradient": _gradient,
    "noise": _noise,
    "clutter": _clutter,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m model_export.shapes",
        description="Write a synthetic shapes data set as root/<class>/<n>.<format>.",
    )
    parser.add_argument("--out", required=True, type=Path, help="root folder to write into")
    parser.add_argument("--per-class", type=int, default=100, help="images per class")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same images")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--format", choices=FORMATS, default="jpg")
    args = parser.parse_args(argv)
    if args.per_class < 1 or args.size < 16:
        parser.error("--per-class must be >= 1 and --size >= 16")
    paths = generate(args.out, args.per_class, args.seed, args.size, args.format)
    print(f"wrote {len(paths)} images ({len(CLASSES)} classes) under {args.out}")


if __name__ == "__main__":
    main()
