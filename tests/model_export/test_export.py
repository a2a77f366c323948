"""vit-export: the bundle it writes, its graphs against PyTorch, and every way it refuses."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from shutil import copytree

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from model_export.export import exporter as export_module
from model_export.export.check import (
    CheckFailed,
    check_pixels,
    draw_images,
    reference_input,
    validate,
)
from model_export.export.exporter import PIXELS, export_bundle, main, source_sha256
from model_export.export.graphs import (
    ExportError,
    FastGraph,
    Graph,
    count_fused_attention,
    export_graph,
)
from model_export.formats.checkpoints import NATIVE_WEIGHTS, save_native
from model_export.model.vit import ViT, ViTConfig
from model_export.preprocessing import array_pixels, bundle_preprocess
from vit_core.bundle import (
    ATTENTION_DISTANCE,
    EMBEDDING,
    EXPLAIN,
    FAST,
    INPUT,
    LOGITS,
    OUTPUTS,
    ROLLOUT,
    BundleError,
    BundleManifest,
    EmbeddingSpec,
    load_bundle,
    sha256_file,
)
from vit_core.images import Preprocessor

TINY = ViTConfig(
    image_size=32,
    patch_size=8,
    dim=32,
    depth=2,
    heads=4,
    mlp_dim=64,
    num_classes=5,
    labels=("circle", "square", "triangle", "star", "cross"),
)
SHA = "ab" * 32


def tiny_vit(seed: int = 0, config: ViTConfig = TINY) -> ViT:
    torch.manual_seed(seed)
    model = ViT(config).eval()
    with torch.no_grad():  # a head with real spread, so top-1 is not decided by rounding noise
        model.head.weight.normal_(0, 1.0)
    return model


@pytest.fixture(scope="module")
def model() -> ViT:
    return tiny_vit()


@pytest.fixture(scope="module")
def bundle(model: ViT, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BundleManifest]:
    out = tmp_path_factory.mktemp("export") / "bundle"
    manifest = export_bundle(model, out, name="tiny", version="7", source_sha256=SHA)
    return out, manifest


@pytest.fixture(scope="module")
def fp16_bundle(model: ViT, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export16") / "bundle"
    export_bundle(model, out, name="tiny", version="7", precision="fp16", source_sha256=SHA)
    return out


def pictures(count: int, config: ViTConfig = TINY, seed: int = 5) -> np.ndarray:
    """(B, H, W, 3) uint8, as the graphs take them."""
    return array_pixels(draw_images(count, config.image_size * 2, seed=seed), config, PIXELS)


def normalised(pixels: np.ndarray, config: ViTConfig = TINY) -> torch.Tensor:
    """The same pixels as PyTorch takes them: (B, 3, H, W) float32, normalised in torch."""
    return reference_input(pixels, PIXELS, bundle_preprocess(config))


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_bundle_holds_both_graphs_and_a_manifest_that_round_trips(
    bundle: tuple[Path, BundleManifest],
) -> None:
    out, written = bundle
    assert sorted(p.name for p in out.iterdir()) == ["explain.onnx", "model.json", "model.onnx"]
    read = load_bundle(out)
    assert read == written
    assert (read.name, read.version, read.precision) == ("tiny", "7", "fp32")
    assert read.labels == list(TINY.labels)
    assert (read.image_size, read.patch_size, read.dim, read.depth, read.heads) == (32, 8, 32, 2, 4)
    assert read.preprocess == bundle_preprocess(TINY)
    assert read.preprocess.mean == TINY.mean and read.preprocess.interpolation == "bicubic"
    assert (read.source.format, read.source.sha256) == ("native", SHA)
    assert set(read.versions) >= {"torch", "onnx", "onnxruntime"}
    fast, explain = read.graphs[FAST], read.graphs[EXPLAIN]
    assert [o.name for o in fast.outputs] == list(OUTPUTS[FAST])
    assert [o.name for o in explain.outputs] == [*OUTPUTS[EXPLAIN], ATTENTION_DISTANCE]
    assert [i.name for i in fast.inputs] == [i.name for i in explain.inputs] == [INPUT]
    assert fast.inputs[0].shape == ["batch", 32, 32, 3] and fast.inputs[0].dtype == "uint8"
    assert read.pixels == PIXELS and read.schema_version == 3
    assert read.embedding == EmbeddingSpec(name="cls", dim=32, normalized=False)
    assert read.attention == "rollout"
    rollout, distance = explain.outputs[-2:]
    assert rollout.shape == ["batch", 16]  # one weight per patch
    assert distance.shape == ["batch", 2, 4]  # (L, H) in pixels, for vit-inspect
    for role in (FAST, EXPLAIN):
        v = read.validation[role]
        assert v.batch_sizes == [1, 3, 32] and v.images == 64
        assert max(e.max_rel for e in v.outputs.values()) <= 1e-4
        assert v.top1_agreement == 1.0


@pytest.mark.parametrize("role", [FAST, EXPLAIN])
@pytest.mark.parametrize("batch", [1, 5])
def test_graphs_equal_torch_at_any_batch_size(
    bundle: tuple[Path, BundleManifest], model: ViT, role: str, batch: int
) -> None:
    out, manifest = bundle
    pixels = pictures(batch)
    logits, embedding = session(out / manifest.graphs[role].file).run(
        [LOGITS, EMBEDDING], {INPUT: pixels}
    )
    with torch.no_grad():
        ref = model(normalised(pixels), attention=role == EXPLAIN)
    np.testing.assert_allclose(logits, ref.logits.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embedding, ref.embedding.numpy(), rtol=1e-4, atol=1e-5)
    assert logits.shape == (batch, 5) and embedding.shape == (batch, 32)


def numpy_rollout(attentions: np.ndarray) -> np.ndarray:
    """Reference: (B, L, H, T, T) → (B, T-1), one layer at a time as Abnar & Zuidema write it."""
    batch, layers, _, tokens, _ = attentions.shape
    out = np.empty((batch, tokens - 1))
    for b in range(batch):
        rollout = np.eye(tokens)
        for layer in range(layers):
            a = attentions[b, layer].mean(axis=0) + np.eye(tokens)
            a /= a.sum(axis=1, keepdims=True)
            rollout = a @ rollout
        out[b] = rollout[0, 1:]
    return out


def test_rollout_in_graph_equals_numpy_reference(
    bundle: tuple[Path, BundleManifest], model: ViT
) -> None:
    out, _ = bundle
    pixels = pictures(3)
    (rollout,) = session(out / "explain.onnx").run([ROLLOUT], {INPUT: pixels})
    with torch.no_grad():
        attentions = model(normalised(pixels), attention=True).attentions.double().numpy()
    np.testing.assert_allclose(rollout, numpy_rollout(attentions), rtol=1e-4, atol=1e-7)
    assert not np.allclose(rollout, rollout[:1])  # different pictures, different maps


def test_fast_graph_runs_one_fused_attention_kernel_per_block(
    bundle: tuple[Path, BundleManifest],
) -> None:
    out, manifest = bundle
    assert count_fused_attention(onnx.load(out / "model.onnx")) == TINY.depth
    assert manifest.graphs[FAST].fused_attention == TINY.depth


def test_export_fails_when_attention_is_not_fused(
    model: ViT, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for an exporter or onnxscript upgrade whose graph the fusion rules no longer match.
    monkeypatch.setattr(export_module, "fuse_for_ort", lambda m: Graph(ir.to_proto(m), 0))
    with pytest.raises(ExportError, match="attention fusion found 0 of 2 blocks"):
        export_bundle(model, tmp_path / "b", name="n", version="1", source_sha256=SHA)
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor its staging folder


def test_fp16_bundle_keeps_uint8_in_float32_out_and_passes(fp16_bundle: Path, model: ViT) -> None:
    manifest = load_bundle(fp16_bundle)
    assert manifest.precision == "fp16"
    for role in (FAST, EXPLAIN):
        graph = manifest.graphs[role]
        assert [t.dtype for t in graph.inputs] == ["uint8"]
        assert {t.dtype for t in graph.outputs} == {"float32"}
        proto = onnx.load(fp16_bundle / graph.file)
        weights = {i.data_type for i in proto.graph.initializer if len(i.dims) == 2}
        assert weights == {onnx.TensorProto.FLOAT16}
        v = manifest.validation[role]
        assert v.top1_agreement >= 0.99 and v.embedding_cosine_min >= 0.999
    assert manifest.graphs[FAST].fused_attention == TINY.depth
    pixels = pictures(4)
    logits, embedding = session(fp16_bundle / "model.onnx").run(None, {INPUT: pixels})
    assert logits.dtype == np.float32
    with torch.no_grad():
        ref = model(normalised(pixels))
    np.testing.assert_array_equal(logits.argmax(1), ref.logits.argmax(1).numpy())


def test_parity_check_rejects_a_graph_that_drifts_from_torch() -> None:
    graph = ir.to_proto(export_graph(FastGraph(tiny_vit(seed=0)), (32, 32), OUTPUTS[FAST]))
    other = FastGraph(tiny_vit(seed=1))  # same architecture, other weights
    x = normalised(pictures(8))  # this graph has no uint8 front: both sides get these
    with pytest.raises(CheckFailed, match=r"fp32 graph drifts .* logits max_abs="):
        validate(graph, other, x.numpy(), OUTPUTS[FAST], "fp32", x)
    with pytest.raises(CheckFailed, match=r"fp16 graph needs top-1 agreement .*top1_agreement="):
        validate(graph, other, x.numpy(), OUTPUTS[FAST], "fp16", x)


@pytest.mark.parametrize("mode", ["squash", "crop"])
def test_parity_pixels_are_what_the_service_makes_in_the_bundles_resize_mode(mode: str) -> None:
    config = replace(TINY, resize_mode=mode, crop_pct=0.875 if mode == "crop" else 1.0)
    image = np.random.default_rng(3).integers(0, 256, (40, 70, 3), dtype=np.uint8)  # (H, W, 3)
    png = io.BytesIO()
    Image.fromarray(image).save(png, "PNG")
    served = Preprocessor(bundle_preprocess(config), 32, 10_000, PIXELS)(png.getvalue()).pixels
    checked = check_pixels(config, [image], PIXELS)  # (2, S, S, 3): noise, then the picture
    np.testing.assert_array_equal(checked[1], served)
    other = replace(config, resize_mode="crop" if mode == "squash" else "squash", crop_pct=0.875)
    assert not np.array_equal(check_pixels(other, [image], PIXELS)[1], served)  # mode matters


def test_zero_head_is_refused_unless_allowed(tmp_path: Path) -> None:
    model = tiny_vit(config=replace(TINY, depth=1))
    model.reset_head(5)  # the fine-tuning head, before training; and no labels
    with pytest.raises(ExportError, match="head's weights are all zero"):
        export_bundle(model, tmp_path / "b", name="n", version="1", source_sha256=SHA)
    assert not (tmp_path / "b").exists()
    manifest = export_bundle(
        model, tmp_path / "b", name="n", version="1", source_sha256=SHA, allow_untrained_head=True
    )
    assert manifest.validation[FAST].top1_agreement == 1.0
    assert manifest.labels == [f"class_{i}" for i in range(5)]


def test_a_model_without_a_head_exports_its_embedding(tmp_path: Path) -> None:
    # An embedding model (a DINOv2, a CLIP tower): no labels, logits (B, 0), nothing to agree on.
    model = ViT(replace(TINY, num_classes=0, labels=()))
    manifest = export_bundle(model, tmp_path / "b", name="n", version="1", source_sha256=SHA)
    assert manifest.labels == [] and not manifest.has_head
    assert manifest.embedding == EmbeddingSpec(name="cls", dim=32, normalized=False)
    assert manifest.validation[FAST].top1_agreement is None
    logits = next(o for o in manifest.graphs[FAST].outputs if o.name == LOGITS)
    assert logits.shape == ["batch", 0]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_native(tiny_vit(config=replace(TINY, depth=1)), tmp_path / "ckpt")


def test_cli_exports_then_refuses_to_overwrite_without_force(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    assert main([str(checkpoint), "--out", str(out), "--name", "shapes", "--version", "2"]) == 0
    manifest = load_bundle(out)
    assert (manifest.name, manifest.version) == ("shapes", "2")
    assert manifest.source.sha256 == source_sha256(checkpoint)
    assert manifest.source.sha256 == sha256_file(checkpoint / NATIVE_WEIGHTS)
    assert "attention fused in 1 of 1 blocks" in capsys.readouterr().out

    before = (out / "model.json").read_text()
    assert main([str(checkpoint), "--out", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (out / "model.json").read_text() == before

    assert main([str(checkpoint), "--out", str(out), "--version", "3", "--force"]) == 0
    assert load_bundle(out).version == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "ckpt"]


def test_cli_reads_a_timm_file_and_records_its_format_and_digest(
    random_vit: ViT,
    to_timm: Callable[[ViT], dict[str, torch.Tensor]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    weights = tmp_path / "vit_tiny.pth"
    torch.save(to_timm(random_vit), weights)
    assert main([str(weights), "--out", str(tmp_path / "b"), "--heads", "4"]) == 0
    manifest = load_bundle(tmp_path / "b")
    assert manifest.source.format == "timm"
    assert manifest.source.sha256 == sha256_file(weights)
    assert manifest.name == "vit_tiny" and manifest.heads == 4
    assert "wrote" in capsys.readouterr().out


def test_cli_force_never_replaces_a_folder_that_is_not_a_bundle(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    assert main([str(checkpoint), "--out", str(tmp_path / "precious"), "--force"]) == 2
    assert "is not a bundle" in capsys.readouterr().err
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda ck: (ck / NATIVE_WEIGHTS).write_bytes(b"\x00garbage"), "not a readable"),
        (lambda ck: (ck / "config.json").write_text("{"), "not valid JSON"),
        (lambda ck: (ck / NATIVE_WEIGHTS).unlink(), "file not found"),
    ],
    ids=["corrupt-weights", "corrupt-config", "missing-weights"],
)
def test_cli_unreadable_checkpoint_exits_2_with_a_message(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], object],
    message: str,
) -> None:
    damage(checkpoint)
    assert main([str(checkpoint), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vit-export: error: ") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_cli_unsupported_configuration_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = save_native(ViT(replace(TINY, channels=1)), tmp_path / "ckpt")
    assert main([str(ckpt), "--out", str(tmp_path / "b")]) == 2
    assert "unsupported configuration: 1 input channels" in capsys.readouterr().err


def test_cli_missing_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_tampered_or_missing_graph_is_rejected_by_load_bundle(
    bundle: tuple[Path, BundleManifest], tmp_path: Path
) -> None:
    copy = copytree(bundle[0], tmp_path / "copy")
    with open(copy / "explain.onnx", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(BundleError, match="explain.onnx: sha256 does not match"):
        load_bundle(copy)
    (copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match="fast graph model.onnx is missing"):
        load_bundle(copy)
