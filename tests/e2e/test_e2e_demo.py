"""The demo bundle (models/demo, six shape classes) on shapes drawn fresh for this test: it names
them, and its attention map's peak falls on the shape. Skipped until the demo bundle exists."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from live import Server

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"
pytestmark = pytest.mark.skipif(
    not (DEMO / "model.json").is_file(),
    reason="models/demo/model.json does not exist yet (the demo model is trained separately)",
)
SEED = 987_654  # not a training seed: every picture is new to the model
PER_CLASS = 4  # 24 pictures in one request: the demo also batches


def shapes() -> list[tuple[str, bytes, tuple[int, int, int, int]]]:
    from model_export.shapes import CLASSES, draw_shape

    drawn = []
    for label, kind in enumerate(CLASSES):
        for n in range(PER_CLASS):
            image, box = draw_shape(kind, 224, np.random.default_rng([SEED, label, n]))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            drawn.append((kind, buffer.getvalue(), box))
    return drawn


def post(server: Server, path: str, images: list[bytes]) -> dict:
    files = [("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(images)]
    answer = httpx.post(f"{server.url}{path}", files=files, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_demo_names_fresh_shapes_and_looks_at_them(serve: Callable[..., Server]) -> None:
    server = serve(bundle=DEMO)
    drawn = shapes()
    images = [image for _, image, _ in drawn]

    classified = post(server, "/classify?top_k=1", images)["results"]
    named = [r["predictions"][0]["label"] for r in classified]
    right = sum(n == kind for n, (kind, _, _) in zip(named, drawn, strict=True))
    assert right >= 0.9 * len(drawn), f"{right}/{len(drawn)} right: {named}"

    attention = post(server, "/attention", images)
    g = attention["grid"][0]
    cell = 224 / g  # pixels per patch, the pictures being square
    on_shape = 0
    for result, (_, _, (left, top, right_, bottom)) in zip(
        attention["results"], drawn, strict=True
    ):
        row, col = np.unravel_index(np.argmax(result["attention"]), (g, g))
        x0, y0 = col * cell, row * cell  # the peak patch's square overlaps the shape's box?
        on_shape += x0 < right_ and x0 + cell > left and y0 < bottom and y0 + cell > top
    assert on_shape >= 0.9 * len(drawn), f"the peak is on the shape in {on_shape}/{len(drawn)}"
