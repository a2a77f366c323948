"""Redraw the example images: `python examples/draw.py` (needs Pillow and numpy, no model).

One shape per class from model_export.demo.shapes on a gradient ground, 224 px (the demo model's
size), each a few kB; and truncated.jpg, the first half of star.jpg, for the error examples.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout, without installing the project

from model_export.demo.shapes import CLASSES, draw_shape  # noqa: E402

# Seeds picked so that the demo model answers each image with its class.
SEEDS = {"circle": 1, "square": 6, "triangle": 5, "star": 3, "cross": 6, "hexagon": 4}
FORMATS = {"circle": "png", "square": "jpg", "triangle": "png", "star": "jpg", "cross": "jpg",
           "hexagon": "png"}  # fmt: skip


def main() -> None:
    for kind in CLASSES:
        image, _ = draw_shape(kind, size=224, rng=SEEDS[kind], background="gradient")
        path = HERE / f"{kind}.{FORMATS[kind]}"
        image.save(path, quality=85) if path.suffix == ".jpg" else image.save(path, optimize=True)
    star = (HERE / "star.jpg").read_bytes()
    (HERE / "truncated.jpg").write_bytes(star[: len(star) // 2])


if __name__ == "__main__":
    main()
