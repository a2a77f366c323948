"""The transform's resampling: fast_image_resize's SIMD passes against Pillow's own, on the CPU.

    python bench/resize.py [--rounds 15]

vit_core.images.transform as the service runs it (vit_core/resampling.py: SIMD where
cykooz.resizer is installed) against the same transform on Pillow's passes, for pictures at the
sizes a decode hands over: 320×240 and 240×320 (640×480 and 480×640 JPEGs at DCT scale 1/2),
640×480 (a PNG, or VIT_EXACT_DECODE=true), 1024×768 and 4032×3024 (a phone's PNG); squash (the
bundled demo, Hugging Face's ViT) and crop (timm's eval transform), bicubic and bilinear, to
224×224 uint8. One thread, the median of interleaved rounds; the largest difference in levels
and the share of pixel values that differ at all.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.crop_resize import picture  # noqa: E402
from vit_core import resampling  # noqa: E402
from vit_core.bundle import PixelFormat, Preprocess  # noqa: E402
from vit_core.images import transform  # noqa: E402

SIZE = 224
PICTURES = [(320, 240), (240, 320), (640, 480), (1024, 768), (4032, 3024)]
RECIPES: list[tuple[Literal["squash", "crop"], Literal["bicubic", "bilinear"]]] = [
    ("squash", "bicubic"),
    ("crop", "bicubic"),
    ("squash", "bilinear"),
]
UINT8 = PixelFormat(dtype="uint8", layout="NHWC")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if not resampling.SIMD:
        raise SystemExit("cykooz.resizer is not installed: only Pillow's passes would run")
    print("| mode | interpolation | picture | Pillow µs | SIMD µs | ratio | max difference "
          "| values differing |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for mode, interpolation in RECIPES:
        p = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, interpolation=interpolation,
                       resize_mode=mode, crop_pct=0.875)  # fmt: skip
        for w, h in PICTURES:
            image = picture(w, h)
            times: dict[bool, list[float]] = {True: [], False: []}
            rows: dict[bool, np.ndarray] = {}
            for _ in range(args.rounds):
                for simd in (False, True):
                    resampling.SIMD = simd
                    started = time.perf_counter()
                    rows[simd] = transform(image, p, SIZE, UINT8)[0]
                    times[simd].append(time.perf_counter() - started)
            resampling.SIMD = True
            diff = np.abs(rows[True].astype(int) - rows[False].astype(int))
            pillow, fast = (statistics.median(times[simd]) * 1e6 for simd in (False, True))
            share = 100 * np.mean(diff > 0)
            print(f"| {mode} | {interpolation} | {w}×{h} | {pillow:,.0f} | {fast:,.0f} | "
                  f"{fast / pillow:.2f} | {diff.max()} | {share:.2f} % |")  # fmt: skip


if __name__ == "__main__":
    main()
