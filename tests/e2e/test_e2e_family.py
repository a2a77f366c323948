"""The ViT family served by a real `vit-serve`: a DeiT (distillation token, two heads), a DINOv2
(registers, LayerScale, SwiGLU), a CLIP image tower (open_clip's names, QuickGELU, projection) and a
SigLIP tower (no class token, attention pooling), each small and random, written in its own format
and exported by the real vit-export (tests/model_export/family.py).

/model says what /embed publishes and what /attention shows; /embed answers that embedding at its
width (unit length for CLIP); /attention a map over the 4 × 4 patches alone; /classify the head's
top class where there is a head. Every answer is what PyTorch computes from the checkpoint.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from live import Server

from tests.conftest import picture

NAMES = ("deit", "dinov2", "clip", "siglip")


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (its checkpoint, its bundle); the torch side is imported here, as tests/conftest.py
    does, so a serving-only install can still collect this file."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.model_export.family import bundle

    return {name: bundle(name, tmp_path_factory.getbasetemp()) for name in NAMES}


def pictures() -> list[bytes]:
    images = []
    for seed, size in enumerate([(120, 80), (50, 90), (64, 64)]):
        buffer = io.BytesIO()
        picture(*size, seed=seed).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


@pytest.mark.parametrize("name", NAMES)
def test_a_family_member_serves_what_torch_computes(
    name: str, serve: Callable[..., Server], family: dict[str, tuple[Path, Path]]
) -> None:
    import torch

    from model_export.preprocessing import preprocessor
    from tests.model_export.family import MEMBERS, reference, torch_model

    member, (checkpoint, bundle) = MEMBERS[name], family[name]
    server = serve(bundle=bundle)
    info = httpx.get(f"{server.url}/model", timeout=10).json()
    embedding_name, dim, normalized = member.embedding
    assert info["embedding"] == {"name": embedding_name, "dim": dim, "normalized": normalized}
    assert info["attention"] == member.attention and info["grid"] == [4, 4]
    assert tuple(info["labels"]) == member.labels

    images = pictures()
    model = torch_model(checkpoint)
    prepare = preprocessor(model.config)
    pixels = torch.from_numpy(np.stack([prepare(b).pixels for b in images]))  # (3, 3, 32, 32)
    want = {k: v.numpy() for k, v in reference(model, pixels).items()}

    embedded = server.post_images("/embed", images)
    got = np.array([r["embedding"] for r in embedded["results"]])  # (3, E)
    assert (embedded["dim"], embedded["normalized"], got.shape) == (dim, normalized, (3, dim))
    assert np.abs(got - want["embedding"]).max() / np.abs(want["embedding"]).max() <= 1e-4
    if normalized:  # CLIP: unit vectors as they come, to compare with text embeddings
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)

    attention = server.post_images("/attention", images)
    assert attention["grid"] == [4, 4] and attention["attention"] == member.attention
    for result, m in zip(attention["results"], want["map"], strict=True):
        grid = np.array(result["attention"])  # (4, 4): no class, distillation or register token
        scaled = (m - m.min()) / (m.max() - m.min())
        assert grid.shape == (4, 4) and np.abs(grid - scaled.reshape(4, 4)).max() <= 1e-3
        assert (result["prediction"] is None) == (not member.labels)

    if member.labels:
        classified = server.post_images("/classify?top_k=3", images)["results"]
        for result, logits in zip(classified, want["logits"], strict=True):
            assert result["predictions"][0]["index"] == int(logits.argmax())
