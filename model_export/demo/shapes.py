"""Synthetic shapes: one filled geometric shape per image, drawn with PIL, in two appearances.

The demo model's data set, and the tests' source of real images with a known answer:

    image, bbox = draw_shape("star", size=224, rng=7)                   # light on dark, 224×224
    image, bbox = draw_shape("star", 224, rng=7, appearance="free")      # any colours, any aspect
    generate("data/shapes", n_per_class=500, seed=0, appearance="free")  # root/<class>/<n>.jpg

Every image is drawn from its own generator seeded by (seed, class index, n), so a data set is
the same whatever order it is written in, and a different seed gives images never seen before.

Appearances (colours in shapes_colour.py, grounds in shapes_grounds.py):
    classic  a light shape on a darker ground (flat, gradient, noise, clutter), square canvas: the
             first demo's distribution, unchanged, so old and new models are compared on it;
    free     lighter, darker or hue-only contrast (similar brightness), on dark or bright grounds
             (those four and textures), canvases of aspect 0.7-1.4 that the service squashes to a
             square, some blurred; `generate` saves them as JPEGs of quality 70-95;
    lighter, darker, hue
             free, with that contrast every time: hue-only is the hardest slice, measured alone.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from model_export.demo.shapes_colour import (
    CONTRASTS,
    classic_colour,
    classic_ground,
    free_colour,
    ground_palette,
)
from model_export.demo.shapes_grounds import PAINTERS

# Head order of every model trained on these images.
CLASSES = ("circle", "square", "triangle", "star", "cross", "hexagon")
APPEARANCES = ("classic", "free", *CONTRASTS)  # lighter, darker, hue: free with that contrast
BACKGROUNDS = ("flat", "gradient", "noise", "clutter")  # the classic grounds
FREE_BACKGROUNDS = (*BACKGROUNDS, "texture")
HUE_BACKGROUNDS = ("flat", "gradient", "noise")  # hue-only edges drown in clutter and texture
FORMATS = ("jpg", "png")

Rng = np.random.Generator | int | None
BBox = tuple[int, int, int, int]  # (left, top, right, bottom) in pixels, right/bottom exclusive

_SUPERSAMPLE = 4  # the mask is drawn 4× larger and box-filtered down: anti-aliased edges
_RADIUS = (0.15, 0.42)  # circumradius as a fraction of the shorter side: never tiny nor cut off
_ASPECT = math.log(1.4)  # free canvases: width / height = exp(U(-this, this)), 0.71-1.4
_CONTRAST_ODDS = (0.35, 0.35, 0.30)  # free: lighter, darker, hue-only
_BLUR = (0.3, (0.3, 1.5))  # free: this share is blurred, Gaussian radius in px at 224
_JPEG_QUALITY = (70, 96)  # free: saved at a quality drawn from [70, 95]


def draw_shape(
    kind: str,
    size: int = 224,
    rng: Rng = None,
    background: str | None = None,
    appearance: str = "classic",
) -> tuple[Image.Image, BBox]:
    """One RGB image of a `kind` shape and its pixel bounding box.

    classic images are size×size; the others have size as their longer side. rng is a
    numpy Generator or an int seed (None: fresh entropy); background is one of the appearance's
    grounds, or None to pick one at random.
    """
    if kind not in CLASSES:
        raise ValueError(f"unknown shape {kind!r}; choose from {', '.join(CLASSES)}")
    if appearance not in APPEARANCES:
        raise ValueError(f"unknown appearance {appearance!r}; choose from {', '.join(APPEARANCES)}")
    grounds = {"classic": BACKGROUNDS, "hue": HUE_BACKGROUNDS}.get(appearance, FREE_BACKGROUNDS)
    if background is not None and background not in grounds:
        raise ValueError(
            f"unknown background {background!r} for {appearance} shapes; "
            f"choose from {', '.join(grounds)}"
        )
    if size < 16:
        raise ValueError(f"size {size} is too small to draw a recognisable shape (minimum 16)")
    rng = np.random.default_rng(rng)
    if appearance == "classic":
        background = background or str(rng.choice(BACKGROUNDS))
        canvas = PAINTERS[background](size, size, rng, classic_ground)  # (H, W, 3) uint8
        mask = _shape_mask(kind, size, size, rng)  # (H, W) uint8 coverage, 255 = fully inside
        return _compose(canvas, mask, classic_colour(canvas, mask, rng)), _bbox(mask)
    forced = appearance in CONTRASTS
    contrast = appearance if forced else str(rng.choice(CONTRASTS, p=_CONTRAST_ODDS))
    options = HUE_BACKGROUNDS if contrast == "hue" else FREE_BACKGROUNDS
    background = background if background in options else str(rng.choice(options))
    w, h = _canvas_size(size, rng)
    canvas = PAINTERS[background](h, w, rng, ground_palette(contrast))
    mask = _shape_mask(kind, h, w, rng)
    image = _compose(canvas, mask, free_colour(canvas, mask, contrast, rng))
    if rng.random() < _BLUR[0]:
        radius = rng.uniform(*_BLUR[1]) * min(w, h) / 224
        image = image.filter(ImageFilter.GaussianBlur(radius))
    return image, _bbox(mask)


def _compose(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> Image.Image:
    alpha = mask[..., None].astype(np.float32) / 255.0  # (H, W, 1)
    pixels = canvas * (1.0 - alpha) + np.trunc(colour).astype(np.float32) * alpha  # (H, W, 3)
    return Image.fromarray(np.rint(pixels).astype(np.uint8), "RGB")


def _bbox(mask: np.ndarray) -> BBox:
    left, top, right, bottom = Image.fromarray(mask).getbbox() or (0, 0, 0, 0)
    return left, top, right, bottom


def _canvas_size(size: int, rng: np.random.Generator) -> tuple[int, int]:
    """(width, height), the longer side `size`: a landscape or portrait picture, or a square."""
    aspect = math.exp(rng.uniform(-_ASPECT, _ASPECT))
    if aspect >= 1:
        return size, max(16, round(size / aspect))
    return max(16, round(size * aspect)), size


def generate(
    root: str | Path,
    n_per_class: int,
    seed: int = 0,
    size: int = 224,
    fmt: str = "jpg",
    progress: Callable[[int], None] | None = None,
    appearance: str = "classic",
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
            rng = np.random.default_rng([seed, label, n])
            image, _ = draw_shape(kind, size, rng, appearance=appearance)
            # JPEG adds the block artefacts real uploads have: mild (90) for classic images,
            # down to quality 70 for free ones. PNG ignores quality.
            quality = 90 if appearance == "classic" else int(rng.integers(*_JPEG_QUALITY))
            path = folder / f"{n:05d}.{fmt}"
            image.save(path, quality=quality)
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


def _shape_mask(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w) uint8 coverage of one shape with random size, position and rotation."""
    radius = rng.uniform(*_RADIUS) * min(h, w)
    centre = rng.uniform(radius + 1, (w - radius - 1, h - radius - 1))  # (x, y), wholly inside
    angle = rng.uniform(0, 2 * math.pi)
    big = Image.new("L", (w * _SUPERSAMPLE, h * _SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    if kind == "circle":
        x, y = centre * _SUPERSAMPLE
        r = radius * _SUPERSAMPLE
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    else:
        points = (_OUTLINES[kind](radius, angle) + centre) * _SUPERSAMPLE
        draw.polygon([tuple(p) for p in points], fill=255)
    return np.asarray(big.resize((w, h), Image.Resampling.BOX))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m model_export.demo.shapes",
        description="Write a synthetic shapes data set as root/<class>/<n>.<format>.",
    )
    parser.add_argument("--out", required=True, type=Path, help="root folder to write into")
    parser.add_argument("--per-class", type=int, default=100, help="images per class")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same images")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--format", choices=FORMATS, default="jpg")
    parser.add_argument("--appearance", choices=APPEARANCES, default="classic")
    args = parser.parse_args(argv)
    if args.per_class < 1 or args.size < 16:
        parser.error("--per-class must be >= 1 and --size >= 16")
    paths = generate(
        args.out, args.per_class, args.seed, args.size, args.format, appearance=args.appearance
    )
    print(f"wrote {len(paths)} images ({len(CLASSES)} classes) under {args.out}")


if __name__ == "__main__":
    main()
