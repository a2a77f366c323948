"""Each family member exports to a bundle that passed the self-check and says what it publishes;
the fp32 gate scales with the model's own float32 noise.

The members are written in their own formats and exported by the real vit-export (family.py);
ONNX Runtime then answers what PyTorch computes, on the patch grid alone (no class, distillation
or register token on the map). The gate: a deep hybrid whose ONNX Runtime graph differs from
PyTorch by more than the old fixed 1e-4 (its float32 noise is that large) passes, and a graph with
one wrong weight is still refused.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from model_export.export.check import (
    FP32_MAX_REL,
    FP32_NOISE_MULTIPLE,
    CheckFailed,
    check_pixels,
    draw_images,
    reference_input,
    validate,
)
from model_export.export.exporter import PIXELS, main
from model_export.export.graphs import FastGraph, export_graph, fuse_for_ort
from model_export.export.pixels import with_pixel_input
from model_export.model.resnet import fold_weight_standardisation
from model_export.model.vit import ViT, ViTConfig
from model_export.preprocessing import bundle_preprocess
from tests.model_export.family import MEMBERS, SIZE, bundle, reference, torch_model
from vit_core.bundle import EMBEDDING, EXPLAIN, INPUT, LOGITS, ROLLOUT, load_bundle


@pytest.mark.parametrize("name", MEMBERS)
def test_each_member_exports_a_checked_bundle_that_says_what_it_publishes(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    checkpoint, out = bundle(name, tmp_path_factory.getbasetemp())
    member, manifest = MEMBERS[name], load_bundle(out)
    assert manifest.source.format == member.format
    e = manifest.embedding
    assert (e.name, e.dim, e.normalized) == member.embedding
    assert manifest.attention == member.attention
    assert tuple(manifest.labels) == member.labels and manifest.grid == (4, 4)
    for v in manifest.validation.values():  # fp32: every output within its noise-scaled gate
        for error in v.outputs.values():
            assert error.float32_noise is not None and error.gate is not None
            assert error.max_rel <= error.gate
            assert error.gate == max(FP32_MAX_REL, FP32_NOISE_MULTIPLE * error.float32_noise)
        assert (v.top1_agreement is None) == (not member.labels)

    pixels = check_pixels(torch_model(checkpoint).config, draw_images(3, SIZE), PIXELS)[:4]
    session = ort.InferenceSession(out / manifest.graphs[EXPLAIN].file)
    logits, embedding, patch_map = session.run([LOGITS, EMBEDDING, ROLLOUT], {INPUT: pixels})
    model = torch_model(checkpoint)
    want = reference(model, reference_input(pixels, PIXELS, manifest.preprocess))
    assert logits.shape == (4, len(member.labels)) and embedding.shape == (4, e.dim)
    assert patch_map.shape == (4, 16)  # the 4 × 4 patches alone, whatever came before them
    np.testing.assert_allclose(embedding, want["embedding"].numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(patch_map, want["map"].numpy(), rtol=0, atol=1e-4)
    if e.normalized:
        np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)
    if member.attention == "pooling":  # the pooling query's weights: a distribution over patches
        np.testing.assert_allclose(patch_map.sum(axis=1), 1.0, rtol=1e-5)


def test_the_export_report_shows_the_embedding_and_both_gate_numbers(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, _ = bundle("dinov2", tmp_path_factory.getbasetemp())
    # DINOv2 serves at any size its positions interpolate to (518 px of them, 224 px inputs).
    out = tmp_path / "at48"
    assert main([str(checkpoint), "--out", str(out), "--image-size", "48"]) == 0
    report = capsys.readouterr().out
    assert (
        "no classification head" in report
        and "/embed: cls, 32 floats; /attention: rollout" in report
    )
    assert "(gate 0.0001; PyTorch float32 vs float64 " in report
    manifest = load_bundle(out)
    assert (manifest.image_size, manifest.grid) == (48, (6, 6))
    assert main([str(checkpoint), "--out", str(tmp_path / "b"), "--image-size", "44"]) == 2
    assert (
        "--image-size: invalid ViTConfig: image_size 44 is not a multiple of patch_size 8"
        in capsys.readouterr().err
    )


# --- the fp32 gate ------------------------------------------------------------------------------

DEEP_HYBRID = ViTConfig(  # a ResNet-50 (3, 4, 9) under a small ViT: deep float32 arithmetic
    image_size=64, patch_size=1, dim=32, depth=1, heads=2, mlp_dim=64, num_classes=10,
    backbone=(3, 4, 9),
)  # fmt: skip


@pytest.fixture(scope="module")
def deep_hybrid() -> tuple[FastGraph, object, np.ndarray, torch.Tensor]:
    """(the fast graph's module, its ONNX graph, check pixels, the same normalised)."""
    torch.manual_seed(0)
    model = ViT(DEEP_HYBRID).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    module = FastGraph(fold_weight_standardisation(copy.deepcopy(model)))
    preprocess = bundle_preprocess(DEEP_HYBRID)
    graph = fuse_for_ort(export_graph(module, DEEP_HYBRID.image_hw, module.outputs))
    graph = with_pixel_input(graph, PIXELS, preprocess)
    pixels = check_pixels(DEEP_HYBRID, draw_images(16, 64), PIXELS)
    return module, graph.proto, pixels, reference_input(pixels, PIXELS, preprocess)


def test_a_deep_hybrid_the_fixed_gate_refused_passes_within_its_float32_noise(
    deep_hybrid: tuple,
) -> None:
    module, proto, pixels, reference = deep_hybrid
    v = validate(proto, module, pixels, module.outputs, "fp32", reference)
    worst = max(v.outputs.values(), key=lambda e: e.max_rel)
    assert worst.max_rel > FP32_MAX_REL  # what the fixed 1e-4 gate refused
    assert worst.float32_noise is not None and worst.gate is not None
    assert worst.max_rel <= worst.gate == FP32_NOISE_MULTIPLE * worst.float32_noise
    assert v.top1_agreement == 1.0 and v.embedding_cosine_min > 0.99999


def test_a_graph_with_a_wrong_weight_is_still_refused(deep_hybrid: tuple) -> None:
    module, proto, pixels, reference = deep_hybrid
    broken = copy.deepcopy(proto)
    head = next(t for t in broken.graph.initializer if tuple(t.dims) in ((32, 10), (10, 32)))
    head.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(head) * 1.01, head.name))
    with pytest.raises(CheckFailed, match=r"logits .* > gate .*float32 noise"):
        validate(broken, module, pixels, module.outputs, "fp32", reference)
