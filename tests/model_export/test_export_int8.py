"""vit-export --precision int8: what becomes int8, what the self-check keeps, and when it refuses.

The bundle is the trained demo model's (tests/conftest.py: int8_demo_bundle): a random model's
logit margins are too thin for top-1 agreement to say anything about quantisation.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from model_export.export.check import CheckFailed, draw_images, validate
from model_export.export.exporter import PIXELS, main
from model_export.export.graphs import ExplainGraph, export_graph, fuse_for_ort
from model_export.export.int8 import Int8Gate, to_int8
from model_export.formats.checkpoints import load_checkpoint, save_native
from model_export.model.vit import ViT, ViTConfig
from model_export.preprocessing import array_pixels
from vit_core.bundle import EXPLAIN, FAST, INPUT, LOGITS, OUTPUTS, ROLLOUT, load_bundle

DEMO = Path(__file__).resolve().parents[2] / "checkpoints" / "demo"
TINY = ViTConfig(
    image_size=32, patch_size=8, dim=32, depth=2, heads=4, mlp_dim=64, num_classes=5,
    labels=("circle", "square", "triangle", "star", "cross"),
)  # fmt: skip


def ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(path).graph.node)


def run(path: Path, pixels: np.ndarray, names: list[str]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(names, {INPUT: pixels})


def test_int8_bundle_quantises_the_dense_layers_and_passes_its_gates(
    int8_demo_bundle: Path,
) -> None:
    manifest = load_bundle(int8_demo_bundle)
    assert manifest.precision == "int8"
    for role in (FAST, EXPLAIN):
        graph = manifest.graphs[role]
        # IO as every bundle's: uint8 pixels in (normalised in the graph), float32 answers out
        assert [t.dtype for t in graph.inputs] == ["uint8"]
        assert {t.dtype for t in graph.outputs} == {"float32"}
        v = manifest.validation[role]
        assert v.top1_agreement >= 0.99 and v.embedding_cosine_min >= 0.99
    assert manifest.validation[EXPLAIN].rollout_correlation_min >= 0.95
    assert manifest.validation[FAST].rollout_correlation_min is None  # no rollout to compare

    fast = ops(int8_demo_bundle / "model.onnx")
    # every block's fused attention runs as QAttention; qkv, proj, fc1, fc2 and the head in int8
    assert fast["QAttention"] == manifest.depth == manifest.graphs[FAST].fused_attention
    assert fast["Attention"] == 0 and fast["MatMul"] == 0 and fast["Gemm"] == 0
    assert fast["MatMulInteger"] == 3 * manifest.depth + 1  # proj, fc1, fc2 per block; the head
    assert fast["Conv"] == 2  # the ResNet stem's and the patch embedding's stay float32


def test_explain_graph_quantises_weights_but_never_the_attention_weights(
    int8_demo_bundle: Path,
) -> None:
    """The rollout multiplies softmax outputs: those products must stay float32."""
    proto = onnx.load(int8_demo_bundle / "explain.onnx")
    constants = {i.name for i in proto.graph.initializer}
    integer = [n for n in proto.graph.node if n.op_type == "MatMulInteger"]
    assert integer and all(n.input[1] in constants for n in integer)  # B is always a weight
    # q·kᵀ and attention·v per block, and the rollout's layer products, stay float MatMuls
    assert Counter(n.op_type for n in proto.graph.node)["MatMul"] >= 2 * 4


def test_int8_answers_like_pytorch_on_fresh_pictures(int8_demo_bundle: Path) -> None:
    model = load_checkpoint(DEMO).model
    config = model.config
    images = draw_images(24, 224, seed=77)  # not the check's seed
    pixels = array_pixels(images, config, PIXELS)  # (24, 224, 224, 3) uint8, as the graph takes
    reference = torch.from_numpy(array_pixels(images, config))  # (24, 3, 224, 224) normalised
    logits, rollout = run(int8_demo_bundle / "explain.onnx", pixels, [LOGITS, ROLLOUT])
    with torch.no_grad():
        ref_logits = model(reference).logits.numpy()
        ref_rollout = ExplainGraph(model)(reference)[2].numpy()
    np.testing.assert_array_equal(logits.argmax(1), ref_logits.argmax(1))
    for got, want in zip(rollout, ref_rollout, strict=True):
        assert np.corrcoef(got, want)[0, 1] > 0.95
    fast = run(int8_demo_bundle / "model.onnx", pixels, [LOGITS])[0]
    np.testing.assert_array_equal(fast.argmax(1), logits.argmax(1))  # /classify = /attention


def test_gate_refuses_a_rollout_below_its_bound() -> None:
    torch.manual_seed(0)
    module = ExplainGraph(ViT(TINY).eval())
    graph = to_int8(fuse_for_ort(export_graph(module, (32, 32), module.outputs)))
    pixels = array_pixels(draw_images(8, 64, seed=5), TINY)  # float32: no pixel front here
    reference = torch.from_numpy(pixels)
    gate = Int8Gate(min_top1=0.0, min_cosine=0.0, min_rollout_correlation=1.01)  # unreachable
    with pytest.raises(CheckFailed, match=r"int8 graph needs .* rollout_correlation_min=0\.9"):
        validate(graph.proto, module, pixels, module.outputs, "int8", reference, gate)
    passed = validate(
        graph.proto, module, pixels, OUTPUTS[EXPLAIN], "int8", reference, Int8Gate(0, 0, 0.5)
    )
    assert passed.rollout_correlation_min is not None and passed.rollout_correlation_min > 0.5


def test_cli_refuses_an_int8_export_whose_top1_drifts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A head whose classes differ by less than int8's rounding: top-1 follows the rounding."""
    torch.manual_seed(0)
    model = ViT(TINY).eval()
    with torch.no_grad():
        row = torch.randn(TINY.dim)
        model.head.weight.copy_(row + 1e-6 * torch.randn(TINY.num_classes, TINY.dim))
        model.head.bias.zero_()
    save_native(model, tmp_path / "ckpt")
    out = tmp_path / "bundle"
    assert main([str(tmp_path / "ckpt"), "--out", str(out), "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vit-export: error: int8 graph needs top-1 agreement >= 0.99")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no leftovers
