"""An int8 bundle of the trained demo model (vit-export --precision int8) served by vit-serve: it
says what it is, and its classes and attention maps are PyTorch's on pictures it never saw."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from live import Server

SEED = 424_242  # neither a training nor an export-check seed
PER_CLASS = 3


def pictures() -> list[bytes]:
    from model_export.demo.shapes import CLASSES, draw_shape

    rng = np.random.default_rng(SEED)
    images = []
    for kind in CLASSES:
        for _ in range(PER_CLASS):
            buffer = io.BytesIO()
            draw_shape(kind, 224, rng)[0].save(buffer, "PNG")
            images.append(buffer.getvalue())
    return images


def test_int8_bundle_serves_pytorchs_answers(
    serve: Callable[..., Server], int8_demo_bundle: Path
) -> None:
    import torch

    from model_export.export.graphs import ExplainGraph
    from model_export.formats.checkpoints import load_checkpoint
    from model_export.preprocessing import preprocessor

    server = serve(bundle=int8_demo_bundle)
    assert httpx.get(f"{server.url}/model", timeout=10).json()["precision"] == "int8"
    images = pictures()
    classified = server.post_images("/classify?top_k=1", images)["results"]
    attention = server.post_images("/attention", images)["results"]

    model = load_checkpoint(Path(__file__).resolve().parents[2] / "checkpoints" / "demo").model
    prepare = preprocessor(model.config)
    pixels = torch.from_numpy(np.stack([prepare(image).pixels for image in images]))
    with torch.no_grad():
        logits, _, rollout, _ = ExplainGraph(model)(pixels)
    labels = model.config.labels
    want = [labels[k] for k in logits.argmax(1).tolist()]
    assert [r["predictions"][0]["label"] for r in classified] == want
    assert [r["prediction"]["label"] for r in attention] == want
    for served, reference in zip(attention, rollout.numpy(), strict=True):
        grid = np.asarray(served["attention"]).ravel()  # scaled to [0, 1]: correlation ignores it
        assert np.corrcoef(grid, reference)[0, 1] > 0.95
