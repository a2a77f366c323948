"""The crop transform's resize: only the crop's part resampled, against the whole picture resized
then cropped (timm's and torchvision's eval transform), on the CPU.

    python bench/crop_resize.py [--rounds 15]

Crop-mode preprocessing (most timm checkpoints: the shorter side to floor(224 / crop_pct), the
centre 224×224) as vit_core.images does it now, against the same Pillow filter run over the whole
picture and then cut, both on Pillow's passes (bench/resize.py compares those with the SIMD
ones the transform runs where it can). Photo-like pictures (a gradient and grain), one thread,
the median of interleaved rounds. Also the largest difference between the two in levels, and
the share of pixel values that differ at all. Squash-mode bundles (the demo's, Hugging Face's
ViT) resize the whole picture either way and are not shown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from vit_core import resampling  # noqa: E402
from vit_core.bundle import PixelFormat, Preprocess  # noqa: E402
from vit_core.images import resize_plan, transform  # noqa: E402

SIZE = 224
PICTURES = [(640, 480), (480, 640), (1024, 768), (4032, 3024)]
# timm's usual ViT recipes
RECIPES: list[tuple[Literal["bicubic", "bilinear"], float]] = [
    ("bicubic", 0.9),
    ("bicubic", 0.875),
    ("bilinear", 0.875),
]
UINT8 = PixelFormat(dtype="uint8", layout="NHWC")


def picture(w: int, h: int) -> Image.Image:
    """A diagonal gradient with grain: every filter tap shows in the result."""
    ramp = np.add.outer(np.arange(h), np.arange(w)) * (255 / (h + w))
    grain = np.random.default_rng(w * h).integers(0, 40, (h, w, 3))
    return Image.fromarray(np.clip(ramp[..., None] + grain, 0, 255).astype(np.uint8))


def whole_then_crop(image: Image.Image, p: Preprocess) -> np.ndarray:
    """What the service did before: resize everything, then cut out the centre."""
    plan = resize_plan(*image.size, p, (SIZE, SIZE))
    filter_ = getattr(Image.Resampling, p.interpolation.upper())
    whole = image.resize((plan.width, plan.height), filter_)
    return np.asarray(whole.crop((plan.left, plan.top, plan.left + SIZE, plan.top + SIZE)))


def timed(step: Callable[[], object], times: list[float]) -> None:
    started = time.perf_counter()
    step()
    times.append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    resampling.SIMD = False  # the crop's saving alone, on Pillow's passes (bench/resize.py: SIMD)
    print(
        "| interpolation | crop_pct | picture | whole then crop µs | crop's part µs | ratio "
        "| max difference | values differing |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for interpolation, crop_pct in RECIPES:
        p = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, interpolation=interpolation,
                       resize_mode="crop", crop_pct=crop_pct)  # fmt: skip
        for w, h in PICTURES:
            image = picture(w, h)
            before, now = whole_then_crop(image, p), transform(image, p, SIZE, UINT8)[0]
            diff = np.abs(before.astype(int) - now.astype(int))
            old: list[float] = []
            new: list[float] = []
            for _ in range(args.rounds):
                timed(lambda: whole_then_crop(image, p), old)  # noqa: B023
                timed(lambda: transform(image, p, SIZE, UINT8), new)  # noqa: B023
            a, b = statistics.median(old) * 1e6, statistics.median(new) * 1e6
            print(f"| {interpolation} | {crop_pct} | {w}×{h} | {a:,.0f} | {b:,.0f} | "
                  f"{b / a:.2f} | {diff.max()} | {100 * np.mean(diff > 0):.3f} % |")  # fmt: skip


if __name__ == "__main__":
    main()
