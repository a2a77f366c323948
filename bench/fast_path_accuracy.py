"""Is the fast decode good enough to be the default? Each bundled model's accuracy on its own test
images, presented at the sizes users send, through the exact path and the fast path.

    python bench/fast_path_accuracy.py [--shapes-per-size 300] [--fashion 10000]

exact: the JPEG decoded in full, then the bundle's resize (what training saw, bit for bit).
fast:  the JPEG decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still covers what the
       resize reads (vit_core.images, VIT_EXACT_DECODE=false), then the same resize.

Test sets: the shapes demo (models/demo) on freshly drawn free-appearance shapes, seeds no
training stage saw, at 640, 1024 and 1600 px on the longer side; Fashion-MNIST (models/fashion)
on its 10,000 official test images upscaled (bicubic) to 640×640, as a user's photo of a 28 px
picture would arrive. Every image is a quality-90 JPEG. Prints, per model and size: accuracy on
both paths and the difference in points, top-1 agreement, the mean absolute difference of the
pixels the model reads (0..255), and the decode + resize time per image on one thread.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model_export.demo.shapes import CLASSES, draw_shape  # noqa: E402
from service.inference.engine import Engine  # noqa: E402
from vit_core.bundle import FAST, LOGITS, BundleManifest, load_bundle  # noqa: E402
from vit_core.images import Preprocessor  # noqa: E402

SHAPE_SIDES = (640, 1024, 1600)
SHAPES_SEED = 9_000  # no stage of the demo's recipe draws from seeds this high
FASHION_SIDE = 640
BATCH = 64


@dataclass(frozen=True)
class Result:
    model: str
    size: str
    images: int
    exact: float  # top-1 accuracy
    fast: float
    agreement: float
    pixel_mad: float  # mean absolute difference of the rows the model reads, 0..255
    exact_ms: float  # decode + resize per image, one thread
    fast_ms: float

    @property
    def points(self) -> float:
        return 100 * (self.fast - self.exact)


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def paths(bundle: Path) -> tuple[BundleManifest, Engine, Preprocessor, Preprocessor]:
    m = load_bundle(bundle)
    common = (m.preprocess, m.image_size, 100_000_000, m.pixels)
    exact = Preprocessor(*common, scaled_decode=False)
    fast = Preprocessor(*common, scaled_decode=True)
    return m, Engine(bundle, m, "cpu", max_batch_size=BATCH), exact, fast


def measure(bundle: Path, name: str, size: str, images: list[bytes], labels: np.ndarray) -> Result:
    _, engine, exact, fast = paths(bundle)
    rows, seconds = {}, {}
    for kind, prepare in (("exact", exact), ("fast", fast)):
        started = time.process_time()
        rows[kind] = np.stack([prepare(data).pixels for data in images])  # (N, *row) uint8
        seconds[kind] = time.process_time() - started
    guesses = {
        kind: np.concatenate(
            [engine.run(FAST, r[i : i + BATCH])[LOGITS].argmax(1) for i in range(0, len(r), BATCH)]
        )
        for kind, r in rows.items()
    }
    mad = float(np.abs(rows["exact"].astype(np.int16) - rows["fast"]).mean())
    return Result(
        model=name,
        size=size,
        images=len(images),
        exact=float((guesses["exact"] == labels).mean()),
        fast=float((guesses["fast"] == labels).mean()),
        agreement=float((guesses["exact"] == guesses["fast"]).mean()),
        pixel_mad=mad,
        exact_ms=1000 * seconds["exact"] / len(images),
        fast_ms=1000 * seconds["fast"] / len(images),
    )


def shapes(per_size: int) -> list[Result]:
    results = []
    for side in SHAPE_SIDES:
        rng = np.random.default_rng([SHAPES_SEED, side])
        labels = np.arange(per_size) % len(CLASSES)
        images = [jpeg(draw_shape(CLASSES[k], side, rng, appearance="free")[0]) for k in labels]
        results.append(measure(ROOT / "models" / "demo", "demo (shapes)", f"{side} px", images,
                               labels))  # fmt: skip
    return results


def fashion(count: int, data: Path) -> list[Result]:
    from model_export.demo.fashion_data import load

    test = load(data, "test")
    pictures = test.images[:count]  # (N, 28, 28) uint8
    images = [
        jpeg(Image.fromarray(p, "L").resize((FASHION_SIDE, FASHION_SIDE), Image.Resampling.BICUBIC))
        for p in pictures
    ]
    labels = np.asarray(test.labels[:count])
    return [measure(ROOT / "models" / "fashion", "fashion", f"{FASHION_SIDE}²", images, labels)]


def table(results: list[Result]) -> str:
    lines = [
        "| model | size | images | exact | fast | Δ points | agreement | pixel MAD | exact ms | "
        "fast ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.size} | {r.images:,} | {100 * r.exact:.2f} % | "
            f"{100 * r.fast:.2f} % | {r.points:+.2f} | {100 * r.agreement:.2f} % | "
            f"{r.pixel_mad:.2f} | {r.exact_ms:.2f} | {r.fast_ms:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes-per-size", type=int, default=300)
    p.add_argument("--fashion", type=int, default=10_000, help="test images (0: skip)")
    p.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    args = p.parse_args()
    results = shapes(args.shapes_per_size)
    if args.fashion:
        results += fashion(args.fashion, args.data)
    print(table(results))
    worst = max(abs(r.points) for r in results)
    verdict = "within" if worst <= 0.3 else "outside"
    print(f"\nlargest accuracy change {worst:.2f} points: {verdict} the 0.3-point bar")
    print(json.dumps([r.__dict__ for r in results], indent=2))


if __name__ == "__main__":
    main()
