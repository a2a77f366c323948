"""vit-inspect on the demo checkpoint and bundle, its numbers against independent numpy loops."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

from model_export.demo.shapes import CLASSES
from model_export.formats.checkpoints import load_checkpoint, save_native
from model_export.inspection.inspector import FIGURES
from model_export.model.attention_distance import attention_distance, patch_distances
from model_export.model.vit import ViT, ViTConfig
from model_export.preprocessing import preprocessor
from tests.model_export.inspect_runs import DEMO_BUNDLE, DEMO_CHECKPOINT, image_folder, run


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(
    scope="module",
    params=[("checkpoint", DEMO_CHECKPOINT), ("bundle", DEMO_BUNDLE)],
    ids=["checkpoint", "bundle"],
)
def inspected(
    request: pytest.FixtureRequest, images: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """vit-inspect's out folder and report for the demo checkpoint (PyTorch) and bundle (ORT)."""
    kind, model = request.param
    out = tmp_path_factory.mktemp("inspect") / kind
    report = run(model, images, out)
    assert report["kind"] == kind
    return out, report


def demo_pixels(images: Path) -> tuple[list[str], np.ndarray]:
    """The used images' names and pixels (B, 3, 224, 224), through the service's transform."""
    prepare = preprocessor(load_checkpoint(DEMO_CHECKPOINT).model.config)
    files = sorted(images.glob("*/0.*"))  # the shapes, one per class folder
    names = [p.relative_to(images).as_posix() for p in files]
    return names, np.stack([prepare(p.read_bytes()).pixels for p in files])


@pytest.fixture(scope="module")
def demo_attentions(images: Path) -> tuple[list[str], np.ndarray]:
    """Names and raw attention weights (B, L, H, T, T) of the demo checkpoint, float64."""
    names, pixels = demo_pixels(images)
    model = load_checkpoint(DEMO_CHECKPOINT).model
    with torch.no_grad():
        weights = model(torch.from_numpy(pixels), attention=True).attentions
    assert weights is not None
    return names, weights.double().numpy()


def loop_attention_distance(weights: np.ndarray, layout: tuple[int, int, int]) -> np.ndarray:
    """(B, L, H, T, T) → (L, H): query by query, [CLS] dropped, weights renormalised, averaged."""
    b, depth, heads, t, _ = weights.shape
    _, width, stride = layout
    rows, cols = np.divmod(np.arange(t - 1), width)  # patch k sits at (k // width, k % width)
    out = np.zeros((depth, heads))
    for image in range(b):
        for layer in range(depth):
            for head in range(heads):
                total = 0.0
                for q in range(t - 1):
                    w = weights[image, layer, head, 1 + q, 1:]
                    dist = stride * np.hypot(rows - rows[q], cols - cols[q])  # (N,) pixels
                    total += float((w / w.sum()) @ dist)
                out[layer, head] += total / (t - 1)
    return out / b


def loop_rollout(weights: np.ndarray) -> np.ndarray:
    """(L, H, T, T) of one image → (N,): the [CLS] row of the rollout over the patches."""
    tokens = weights.shape[-1]
    rollout = np.eye(tokens)
    for layer in weights:
        a = layer.mean(axis=0) + np.eye(tokens)
        rollout = (a / a.sum(axis=1, keepdims=True)) @ rollout
    return rollout[0, 1:]


def loop_cosine(pos: np.ndarray) -> np.ndarray:
    n = len(pos)
    out = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            out[i, j] = pos[i] @ pos[j] / (np.linalg.norm(pos[i]) * np.linalg.norm(pos[j]))
    return out


def test_attention_distance_of_hand_made_weights() -> None:
    """Grid 2×2 at 32 px (16 px patches); every patch attends to the diagonally opposite one,
    and [CLS] takes half of each row, which the renormalisation must remove."""
    t = 5
    weights = torch.zeros(1, 1, 2, t, t)
    for q in range(4):
        weights[0, 0, 0, 1 + q, 0] = 0.5  # [CLS]
        weights[0, 0, 0, 1 + q, 1 + (3 - q)] = 0.5  # 0↔3, 1↔2: the opposite corner
        weights[0, 0, 1, 1 + q, 1 + q] = 1.0  # head 1: every patch attends only to itself
    got = attention_distance(weights, patch_distances((2, 2, 16)))
    torch.testing.assert_close(got, torch.tensor([[[16 * math.sqrt(2), 0.0]]]))


def test_attention_distance_on_a_wide_grid_matches_the_loop() -> None:
    """A 2×3 grid of 8 px patches (a non-square hybrid's layout): rows and columns kept apart."""
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(2, 3, 2, 7, 7, generator=g, dtype=torch.float64).softmax(dim=-1)
    got = attention_distance(weights, patch_distances((2, 3, 8))).mean(dim=0)  # (L, H)
    got = got.numpy()
    np.testing.assert_allclose(got, loop_attention_distance(weights.numpy(), (2, 3, 8)))


def test_report_matches_independent_loops(
    inspected: tuple[Path, dict[str, Any]], demo_attentions: tuple[list[str], np.ndarray]
) -> None:
    """The bundle's numbers come from its ONNX graph, the loops' from the checkpoint's torch."""
    names, weights = demo_attentions
    _, report = inspected
    assert report["grid"] == [14, 14]
    assert report["images"]["used"] == len(CLASSES) == len(names)
    skipped = {s["file"]: s["reason"] for s in report["images"]["skipped"]}
    assert list(skipped) == ["notes.jpg", "video.png"]
    assert (
        "not a JPEG, PNG" in skipped["notes.jpg"] and "300 MiB is too large" in skipped["video.png"]
    )

    distance = np.asarray(report["attention_distance"])  # (L, H)
    assert distance.shape == (4, 4)
    np.testing.assert_allclose(distance, loop_attention_distance(weights, (14, 14, 16)), rtol=1e-5)

    pos = load_file(str(DEMO_CHECKPOINT / "model.safetensors"))["pos_embed"][0, 1:]  # (196, 128)
    similarity = np.asarray(report["position_similarity"])
    assert similarity.shape == (196, 196)
    np.testing.assert_allclose(similarity, loop_cosine(pos.astype(np.float64)), atol=2e-6)

    for shown in report["rollout"]:
        weights_of = weights[names.index(shown["image"])]
        expected = loop_rollout(weights_of).reshape(14, 14)
        np.testing.assert_allclose(shown["map"], expected, rtol=1e-4, atol=1e-6)
    assert len({s["image"].split("/")[0] for s in report["rollout"]}) == 4  # spread over classes


def test_filters_are_the_principal_components_of_the_patch_embedding(
    images: Path, tmp_path: Path
) -> None:
    """On a pure ViT (the demo is a hybrid: its patches come from the stem, not from RGB)."""
    torch.manual_seed(0)
    config = ViTConfig(image_size=64, patch_size=8, dim=48, depth=1, heads=2, mlp_dim=96)
    save_native(ViT(config), tmp_path / "pure")
    report = run(tmp_path / "pure", images, tmp_path / "out")
    filters = load_file(str(tmp_path / "pure" / "model.safetensors"))["patch_embed.proj.weight"]
    x = filters.reshape(len(filters), -1).astype(np.float64)  # (D=48, 3·8·8)
    covariance = np.cov(x, rowvar=False)
    eigenvalues = np.sort(np.linalg.eigvalsh(covariance))[::-1]
    ratio = report["filters"]["explained_variance_ratio"]
    assert report["filters"]["components"] == len(ratio) == 28
    np.testing.assert_allclose(ratio, eigenvalues[:28] / eigenvalues.sum(), rtol=1e-4, atol=1e-6)
    assert report["figures"] == FIGURES


def test_every_figure_is_a_png(inspected: tuple[Path, dict[str, Any]]) -> None:
    """All but the filters: the demo is a hybrid, whose tokens come from its ResNet stem."""
    out, report = inspected
    assert "hybrid" in report["filters"]["skipped"]
    assert report["figures"] == {k: v for k, v in FIGURES.items() if k != "filters"}
    for name in report["figures"].values():
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 200, (name, image.size)
