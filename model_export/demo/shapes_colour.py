"""Colours for the synthetic shapes: which grounds, and which shape colour stands out on them.

Two appearances:
    classic  a light shape on a darker ground, brighter than 95% of what it covers by ≥ 80 levels
             of brightness: the original demo's distribution, kept bit for bit for comparison;
    free     the contrast is one of CONTRASTS, on grounds dark or bright:
               lighter  brighter than 95% of the covered ground by 35-110 levels
               darker   darker than 95% of it by 35-110 levels
               hue      within 12 levels of the covered ground's mean brightness, a clearly
                        different colour (RGB distance ≥ 90): only hue tells shape from ground
"""

from __future__ import annotations

import numpy as np

from model_export.demo.shapes_grounds import Palette, hsv

CONTRASTS = ("lighter", "darker", "hue")
_CLASSIC_MARGIN = 80.0  # brightness (0-255) a classic shape keeps above (almost all) it covers
_MARGIN = (35.0, 110.0)  # free lighter/darker shapes: the margin is drawn from this range
_HUE_LUMA = 12.0  # hue-only: at most this far from the ground's mean brightness
_HUE_DISTANCE = 90.0  # ... and at least this far from its mean colour in RGB
_CANDIDATES = 256  # random colours tried per shape


def luma(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) → (...): perceived brightness (ITU-R BT.601), 0-255."""
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def classic_ground(rng: np.random.Generator) -> np.ndarray:
    """Any hue, kept darker than the light shapes drawn on top of it."""
    return np.asarray(hsv(rng, 1, (0.0, 0.45))[0])


def classic_colour(canvas: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random light colour, brighter than 95% of the background it covers by a clear margin."""
    covered = luma(canvas[mask > 0].astype(np.float32))  # (M,); never empty: radius >= 2.4 px
    floor = np.percentile(covered, 95)  # the shape must outshine all but the brightest 5%
    candidates = np.concatenate([hsv(rng, 64, (0.75, 1.0)), [[255.0, 255.0, 255.0]]])  # (65, 3)
    margin = luma(candidates) - floor  # (65,)
    good = np.flatnonzero(margin >= _CLASSIC_MARGIN)
    return np.asarray(candidates[good[0] if len(good) else int(np.argmax(margin))])


def ground_palette(contrast: str) -> Palette:
    """Ground colours that leave room for the contrast: darker shapes need a ground to be darker
    than, hue-only shapes a coloured ground of middling or high brightness."""
    if contrast == "lighter":
        return lambda rng: hsv(rng, 1, (0.0, 0.7))[0]
    if contrast == "darker":
        return lambda rng: hsv(rng, 1, (0.35, 1.0))[0]
    return lambda rng: hsv(rng, 1, (0.45, 0.95), (0.3, 1.0))[0]


def free_colour(
    canvas: np.ndarray, mask: np.ndarray, contrast: str, rng: np.random.Generator
) -> np.ndarray:
    """(3,) float RGB: a shape colour with the given contrast against the ground it covers."""
    covered = canvas[mask > 0].astype(np.float32)  # (M, 3)
    if contrast == "hue":
        candidates = hsv(rng, _CANDIDATES, (0.2, 1.0), (0.4, 1.0))  # (N, 3)
        mean = covered.mean(axis=0)  # (3,)
        off = np.abs(luma(candidates) - luma(mean))  # (N,)
        distance = np.linalg.norm(candidates - mean, axis=1)  # (N,)
        good = np.flatnonzero((off <= _HUE_LUMA) & (distance >= _HUE_DISTANCE))
        best = int(np.argmax(distance - 8 * off))  # no perfect match: the nearest to one
    else:
        extremes = [[255.0, 255.0, 255.0], [0.0, 0.0, 0.0]]
        candidates = np.concatenate([hsv(rng, _CANDIDATES, (0.0, 1.0)), extremes])
        brightness = luma(covered)
        if contrast == "lighter":
            margin = luma(candidates) - np.percentile(brightness, 95)
        else:
            margin = np.percentile(brightness, 5) - luma(candidates)
        good = np.flatnonzero(margin >= rng.uniform(*_MARGIN))
        best = int(np.argmax(margin))  # white or black, at worst
    pick = good[rng.integers(len(good))] if len(good) else best
    return np.asarray(candidates[pick])
