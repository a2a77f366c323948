"""How far the scaled JPEG decode moves the model's answers, and what it saves.

    python bench/decode_accuracy.py [--count 3000] [--bundle models/demo] [--seed 0]

Makes --count varied JPEGs itself (longer side 256-4000 px, log-uniform; portrait and
landscape; photo-like light and objects, textures from fine to coarse, the demo's shapes; grain;
quality 50-95, three chroma subsamplings, some progressive, greyscale, CMYK or EXIF-turned), and
runs each through the service's Preprocessor twice, with a full decode and with the scaled decode
(vit_core.images), then through the bundle's fast graph (a real ONNX Runtime session on the CPU).

Prints the top-1 agreement of the two paths, the logits' relative error ||a - b|| / ||b||
(percentiles), both over every image and over the images the scaled path really decoded smaller
(a JPEG under twice the model's input in either axis is decoded in full either way), the demo
shapes' accuracy on both paths, and the preprocessing time per image of each path (decode +
resize + normalise, one thread), over the set and for the 640×480 photos of bench/pictures.py.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pictures import photos  # noqa: E402
from model_export.demo.shapes import CLASSES, draw_shape  # noqa: E402
from service.inference.engine import Engine  # noqa: E402
from vit_core.bundle import FAST, LOGITS, load_bundle  # noqa: E402
from vit_core.image_costs import dct_scale  # noqa: E402
from vit_core.images import Preprocessor, least_decode, open_image  # noqa: E402

KINDS = ("photo", "texture", "shapes")
SIDES = (256, 4000)  # the longer side, drawn log-uniform
GRAIN = 1024  # the grain tile's side: a fresh random field per image would cost more than the rest
BATCH = 32


@dataclass(frozen=True)
class Sample:
    data: bytes
    kind: str
    label: int  # the shape's class index; -1 for the others


def samples(count: int, seed: int) -> Iterator[Sample]:
    rng = np.random.default_rng(seed)
    grain = rng.normal(0, 1, (GRAIN, GRAIN, 3)).astype(np.float32)  # (T, T, 3), σ = 1
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        long = round(math.exp(rng.uniform(*np.log(SIDES))))
        short = max(SIDES[0], round(long / math.exp(rng.uniform(0, math.log(2)))))
        size = (long, short) if rng.random() < 0.5 else (short, long)  # (W, H)
        label = int(rng.integers(len(CLASSES))) if kind == "shapes" else -1
        image = _draw(kind, size, label, rng)
        pixels = np.asarray(image, np.int16) + _grain(grain, image.size, rng)  # (H, W, 3)
        yield Sample(_jpeg(np.clip(pixels, 0, 255).astype(np.uint8), rng), kind, label)


def _draw(kind: str, size: tuple[int, int], label: int, rng: np.random.Generator) -> Image.Image:
    """Drawn at most 512 px and enlarged (smooth like a photo's light and edges); grain is added
    at full size afterwards. Shapes keep their own canvas aspect (0.7-1.4, or square)."""
    w, h = size
    if kind == "shapes":
        appearance = "classic" if rng.random() < 0.3 else "free"
        small, _ = draw_shape(CLASSES[label], min(512, max(w, h)), rng, appearance=appearance)
        scale = max(w, h) / max(small.size)
        return small.resize((round(small.width * scale), round(small.height * scale)))
    if kind == "texture":  # noise blobs from 4 px to a quarter of the picture
        cell = math.exp(rng.uniform(math.log(4), math.log(max(w, h) / 4)))
        field = rng.integers(0, 256, (max(2, round(h / cell)), max(2, round(w / cell)), 3))
        return Image.fromarray(field.astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    sw, sh = (max(2, round(side * 512 / max(size))) for side in size)
    y, x = np.mgrid[0:sh, 0:sw] / max(sw, sh)
    light = rng.uniform(40, 200, 3) + rng.uniform(-90, 90, 3) * (x + y)[..., None] / 2
    image = Image.fromarray(np.clip(light, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 10))):
        x0, y0 = int(rng.integers(0, sw)), int(rng.integers(0, sh))
        x1, y1 = x0 + int(rng.integers(8, sw // 2 + 9)), y0 + int(rng.integers(8, sh // 2 + 9))
        box = (x0, y0, x1, y1)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill)
    return image.resize(size, Image.Resampling.BICUBIC)


def _grain(tile: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) int16 sensor-like noise of a random strength (σ 0-12): the tile, shifted,
    repeated (int16, so that a 12 MP picture's grain costs a few passes of 2 bytes a sample)."""
    w, h = size
    strong = np.rint(tile * rng.uniform(0, 12)).astype(np.int16)
    shifted = np.roll(strong, (int(rng.integers(GRAIN)), int(rng.integers(GRAIN))), (0, 1))
    return np.tile(shifted, (-(-h // GRAIN), -(-w // GRAIN), 1))[:h, :w]


def _jpeg(rgb: np.ndarray, rng: np.random.Generator) -> bytes:
    """Quality 50-95, 4:2:0 / 4:2:2 / 4:4:4, a quarter progressive; some grey, CMYK or turned."""
    image, options = Image.fromarray(rgb), {}
    form = rng.choice(["rgb", "grey", "cmyk", "exif"], p=[0.75, 0.1, 0.05, 0.1])
    if form == "grey":
        image = image.convert("L")
    elif form == "cmyk":
        image = image.convert("CMYK")
    elif form == "exif":
        exif = Image.Exif()
        exif[0x0112] = int(rng.choice([3, 6, 8]))  # turned 180°, 90° clockwise, 90° anticlockwise
        options["exif"] = exif
    buffer = io.BytesIO()
    image.save(
        buffer,
        "JPEG",
        quality=int(rng.choice([50, 70, 85, 95])),
        subsampling=int(rng.integers(3)),
        progressive=bool(rng.random() < 0.25),
        **options,
    )
    return buffer.getvalue()


@dataclass
class Row:
    sample: Sample
    exact: np.ndarray  # (3, S, S) pixels until the batch runs, then (K,) logits
    scaled: np.ndarray
    exact_s: float  # preprocessing time
    scaled_s: float
    smaller: bool  # whether the scaled path decoded this JPEG smaller than in full


def run(samples_: Iterator[Sample], exact: Preprocessor, fast: Preprocessor, engine: Engine):
    rows: list[Row] = []
    least = least_decode(fast.preprocess, fast.image_size)
    for s in samples_:
        t0 = time.perf_counter()
        a = exact(s.data).pixels
        t1 = time.perf_counter()
        b = fast(s.data).pixels
        t2 = time.perf_counter()
        smaller = dct_scale(open_image(s.data, fast.max_pixels, None, lambda _: least)) > 1
        rows.append(Row(s, a, b, t1 - t0, t2 - t1, smaller))
        if len(rows) % BATCH == 0:
            _logits(engine, rows[-BATCH:])
            print(f"{len(rows)} images", file=sys.stderr, flush=True)
    _logits(engine, rows[len(rows) // BATCH * BATCH :])
    return rows


def _logits(engine: Engine, rows: list[Row]) -> None:
    """Pixels → logits in place, one batch per path (the pixels are freed as they go)."""
    if not rows:
        return
    for path in ("exact", "scaled"):
        logits = engine.run(FAST, np.stack([getattr(r, path) for r in rows]))[LOGITS]  # (B, K)
        for r, row_logits in zip(rows, logits, strict=True):
            setattr(r, path, row_logits)


def summary(rows: list[Row]) -> dict[str, object]:
    a, b = np.stack([r.exact for r in rows]), np.stack([r.scaled for r in rows])  # (N, K)
    relative = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
    top2 = np.sort(a, axis=1)[:, -2:]  # (N, 2): the exact path's runner-up and winner
    flipped = a.argmax(1) != b.argmax(1)
    return {
        "images": len(rows),
        "top1_agreement": float(1 - flipped.mean()),
        "disagreements": int(flipped.sum()),
        # how close a call each flipped image was on the exact path (winner - runner-up logit)
        "largest_flipped_margin": float((top2[:, 1] - top2[:, 0])[flipped].max(initial=0)),
        "logit_rel_error": {
            f"p{q}": float(np.percentile(relative, q)) for q in (50, 90, 99, 99.9, 100)
        },
    }


def timing(exact: Preprocessor, fast: Preprocessor, data: list[bytes]) -> dict[str, float]:
    """Best-of-three mean ms per image for each path: the machine's speed drifts between runs."""
    out = {}
    for name, prepare in (("exact_ms", exact), ("scaled_ms", fast)):
        best = math.inf
        for _ in range(3):
            started = time.perf_counter()
            for d in data:
                prepare(d)
            best = min(best, (time.perf_counter() - started) / len(data))
        out[name] = round(best * 1000, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=3000, help="JPEGs to make (default 3000)")
    p.add_argument("--bundle", type=Path, default=ROOT / "models" / "demo")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    manifest = load_bundle(args.bundle)
    engine = Engine(args.bundle, manifest, "cpu")
    exact, fast = (
        Preprocessor(manifest.preprocess, manifest.image_size, 40_000_000, scaled_decode=scaled)
        for scaled in (False, True)
    )
    started = time.perf_counter()
    rows = run(samples(args.count, args.seed), exact, fast, engine)
    shapes = [r for r in rows if r.sample.kind == "shapes"]
    truth = np.asarray([r.sample.label for r in shapes])
    result = {
        "all": summary(rows),
        "decoded_smaller": summary([r for r in rows if r.smaller]),
        **{kind: summary([r for r in rows if r.sample.kind == kind]) for kind in KINDS},
        "shapes_accuracy": {
            path: float((np.stack([getattr(r, path) for r in shapes]).argmax(1) == truth).mean())
            for path in ("exact", "scaled")
        },
        "preprocess_ms_mean": {
            "exact": round(1000 * float(np.mean([r.exact_s for r in rows])), 2),
            "scaled": round(1000 * float(np.mean([r.scaled_s for r in rows])), 2),
        },
        "preprocess_ms_640x480_photo": timing(exact, fast, photos(50)),
        "seconds": round(time.perf_counter() - started),
        "command": " ".join(["python", "bench/decode_accuracy.py", *sys.argv[1:]]),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
