"""A hybrid ResNet + ViT bundle with a non-square input, served by a real `vit-serve`: /model
reports the backbone, and /classify, /embed and /attention answer what PyTorch computes."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from live import Server

from tests.conftest import picture

# The torch side (model, exporter) is imported in the fixture and the test, as tests/conftest.py
# does, so a serving-only install can still collect this file.
CONFIG = dict(
    image_size=(64, 96), patch_size=2, dim=32, depth=2, heads=2, mlp_dim=64, num_classes=3,
    labels=("ant", "bee", "cat"), backbone=(1,),  # stem + one stage: stride 4, an 8×12 grid
)  # fmt: skip


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """(a random hybrid ViT, its bundle from the real exporter)."""
    torch = pytest.importorskip("torch")
    from model_export.export.exporter import export_bundle
    from model_export.model.vit import ViT, ViTConfig

    torch.manual_seed(0)
    model = ViT(ViTConfig(**CONFIG)).eval()
    with torch.no_grad():  # a head with spread, so the classes differ per picture
        model.head.weight.normal_(0, 1.0)
    out = tmp_path_factory.mktemp("bundles") / "hybrid"
    export_bundle(model, out, name="hybrid", version="1", source_sha256="0" * 64)
    return model, out


def pictures() -> list[bytes]:
    images = []
    for seed, size in enumerate([(120, 80), (50, 90), (96, 64)]):
        buffer = io.BytesIO()
        picture(*size, seed=seed).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def test_a_hybrid_bundle_serves_what_torch_computes(
    serve: Callable[..., Server], hybrid: tuple[Any, Path]
) -> None:
    import torch

    from model_export.export.graphs import attention_rollout
    from model_export.preprocessing import preprocessor

    model, bundle = hybrid
    server = serve(bundle=bundle)
    info = httpx.get(f"{server.url}/model", timeout=10).json()
    assert info["backbone"] == {"stages": [1], "width": 1, "stride": 4}
    assert (info["image_size"], info["patch_size"], info["grid"]) == ([64, 96], 2, [8, 12])

    images = pictures()
    prepare = preprocessor(model.config)
    pixels = torch.from_numpy(np.stack([prepare(b).pixels for b in images]))  # (3, 3, 64, 96)
    with torch.no_grad():
        want = model(pixels, attention=True)
    assert want.attentions is not None
    rollout = attention_rollout(want.attentions)[:, 0, 1:].reshape(-1, 8, 12).numpy()

    classified = server.post_images("/classify?top_k=3", images)["results"]
    for result, logits in zip(classified, want.logits, strict=True):
        assert result["predictions"][0]["index"] == int(logits.argmax())
    embedded = server.post_images("/embed", images)
    got = np.array([r["embedding"] for r in embedded["results"]])  # (3, D)
    ref = want.embedding.numpy()
    assert embedded["dim"] == 32 and np.abs(got - ref).max() / np.abs(ref).max() <= 1e-4
    attention = server.post_images("/attention", images)
    assert attention["grid"] == [8, 12]
    for result, r in zip(attention["results"], rollout, strict=True):
        grid = np.array(result["attention"])  # (8, 12), scaled to [0, 1]
        scaled = (r - r.min()) / (r.max() - r.min())
        assert grid.shape == (8, 12) and np.abs(grid - scaled).max() <= 1e-3
