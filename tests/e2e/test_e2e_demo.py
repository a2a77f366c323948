"""The demo bundle (models/demo, six shape classes) on shapes drawn fresh for this test, in both
polarities and in hue alone, on canvases of any aspect: it names them, and its attention map's
peak falls on the shape. Skipped until the demo bundle exists."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from live import Server

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"
pytestmark = pytest.mark.skipif(
    not (DEMO / "model.json").is_file(),
    reason="models/demo/model.json does not exist yet (the demo model is trained separately)",
)
SEED = 987_654  # not a training seed: every picture is new to the model
# 30 pictures in one request (the demo also batches): per class, two light shapes, two dark ones
# and one whose only contrast is its hue.
APPEARANCES = ("lighter", "lighter", "darker", "darker", "hue")


@dataclass(frozen=True)
class Drawn:
    kind: str
    appearance: str
    data: bytes  # the JPEG posted
    size: tuple[int, int]  # (width, height) of the picture
    box: tuple[int, int, int, int]  # the shape's pixel bounding box in it


def shapes() -> list[Drawn]:
    from model_export.demo.shapes import CLASSES, draw_shape

    drawn = []
    for label, kind in enumerate(CLASSES):
        for n, appearance in enumerate(APPEARANCES):
            rng = np.random.default_rng([SEED, label, n])
            image, box = draw_shape(kind, 224, rng, appearance=appearance)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85)
            drawn.append(Drawn(kind, appearance, buffer.getvalue(), image.size, box))
    return drawn


def test_the_demo_names_fresh_shapes_in_any_colours_and_looks_at_them(
    serve: Callable[..., Server],
) -> None:
    server = serve(bundle=DEMO)
    drawn = shapes()
    images = [d.data for d in drawn]

    classified = server.post_images("/classify?top_k=1", images, "image/jpeg")["results"]
    named = [r["predictions"][0]["label"] for r in classified]
    wrong = [(d.kind, d.appearance, n) for n, d in zip(named, drawn, strict=True) if n != d.kind]
    # The bundled model scores 97.9 % on free-appearance shapes and 96.9 % on hue-only ones
    # (checkpoints/demo/summary.json): about one miss in 30 is expected, three are a regression.
    assert len(wrong) <= 2, f"{len(wrong)}/{len(drawn)} wrong: {wrong}"
    for polarity in ("lighter", "darker", "hue"):  # no contrast is one it cannot see
        missed = [w for w in wrong if w[1] == polarity]
        assert len(missed) <= 1, f"{polarity} shapes missed: {missed}"

    attention = server.post_images("/attention", images, "image/jpeg")
    g = attention["grid"][0]
    on_shape = 0
    for result, d in zip(attention["results"], drawn, strict=True):
        row, col = np.unravel_index(np.argmax(result["attention"]), (g, g))
        # The picture was squashed to the model's square: a patch is (W/g)×(H/g) of the picture.
        cw, ch = d.size[0] / g, d.size[1] / g
        x0, y0 = col * cw, row * ch  # does the peak patch's rectangle overlap the shape's box?
        left, top, right, bottom = d.box
        on_shape += x0 < right and x0 + cw > left and y0 < bottom and y0 + ch > top
    assert on_shape >= 0.9 * len(drawn), f"the peak is on the shape in {on_shape}/{len(drawn)}"
