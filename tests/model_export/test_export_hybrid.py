"""vit-export on a hybrid ResNet + ViT with a non-square input: both graphs, fp32 and fp16."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model_export.export.check import FP16_MIN_COSINE, draw_images, reference_input
from model_export.export.exporter import PIXELS, export_bundle
from model_export.model.resnet import StdConv2d, fold_weight_standardisation
from model_export.model.vit import ViT, ViTConfig
from model_export.preprocessing import array_pixels, bundle_preprocess
from vit_core.bundle import EXPLAIN, FAST, BundleManifest, load_bundle

HYBRID = ViTConfig(
    image_size=(64, 96), patch_size=2, dim=32, depth=2, heads=4, mlp_dim=64, num_classes=3,
    labels=("circle", "square", "triangle"), backbone=(1,),  # stem + one stage: stride 4
)  # fmt: skip
SHA = "ab" * 32


@pytest.fixture(scope="module")
def model() -> ViT:
    torch.manual_seed(0)
    model = ViT(HYBRID).eval()
    with torch.no_grad():  # a head with real spread, so top-1 is not decided by rounding noise
        model.head.weight.normal_(0, 1.0)
    return model


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def bundle(
    request: pytest.FixtureRequest, model: ViT, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, BundleManifest]:
    out = tmp_path_factory.mktemp(request.param) / "bundle"
    export_bundle(
        model, out, name="hybrid", version="1", precision=request.param, source_sha256=SHA
    )
    return out, load_bundle(out)


def test_manifest_describes_the_backbone_and_the_non_square_grid(
    bundle: tuple[Path, BundleManifest],
) -> None:
    _, m = bundle
    assert m.image_hw == (64, 96) and m.patch_size == 2 and m.grid == (8, 12)
    assert m.backbone is not None and (m.backbone.stages, m.backbone.stride) == ([1], 4)
    assert m.graphs[FAST].inputs[0].shape == ["batch", 64, 96, 3]  # uint8, as decoded
    outputs = {o.name: o.shape for o in m.graphs[EXPLAIN].outputs}
    assert outputs["rollout"] == ["batch", 96]


def test_graphs_agree_with_torch(bundle: tuple[Path, BundleManifest], model: ViT) -> None:
    out, m = bundle
    pixels = array_pixels(draw_images(5, 96, seed=9), HYBRID, PIXELS)  # (5, 64, 96, 3) uint8
    graph = str(out / m.graphs[EXPLAIN].file)
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    logits, embedding, *_ = session.run(None, {"pixels": pixels})
    with torch.no_grad():
        ref = model(reference_input(pixels, PIXELS, bundle_preprocess(HYBRID)))
    want_logits, want_embedding = ref.logits.numpy(), ref.embedding.numpy()
    if m.precision == "fp32":  # the plain ViT's bar: 1e-4 relative
        assert np.abs(logits - want_logits).max() / np.abs(want_logits).max() <= 1e-4
        assert np.abs(embedding - want_embedding).max() / np.abs(want_embedding).max() <= 1e-4
    else:
        cosine = (embedding * want_embedding).sum(-1) / (
            np.linalg.norm(embedding, axis=-1) * np.linalg.norm(want_embedding, axis=-1)
        )
        assert cosine.min() >= FP16_MIN_COSINE
        assert (logits.argmax(-1) == want_logits.argmax(-1)).all()
    for role in (FAST, EXPLAIN):  # the exporter's own check, over 64 images and 3 batch sizes
        assert m.validation[role].top1_agreement >= 0.99


def test_folding_the_standardisation_keeps_the_function(model: ViT) -> None:
    folded = fold_weight_standardisation(copy.deepcopy(model))
    convs = [m for m in folded.modules() if isinstance(m, StdConv2d)]
    assert convs and all(c.std is None for c in convs)
    assert all(c.std == "timm" for c in model.modules() if isinstance(c, StdConv2d))  # untouched
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(folded(x).logits, model(x).logits, rtol=1e-5, atol=1e-5)
