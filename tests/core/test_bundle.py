"""model.json: the schema both sides share, and load_bundle's refusal of anything half-made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from vit_core.bundle import (
    ATTENTION_DISTANCE,
    EMBEDDING,
    EXPLAIN,
    FAST,
    INPUT,
    LEGACY_PIXELS,
    LOGITS,
    MANIFEST,
    OUTPUTS,
    ROLLOUT,
    BundleError,
    BundleManifest,
    EmbeddingSpec,
    PixelFormat,
    load_bundle,
    sha256_file,
)

GRAPH_BYTES = {"model.onnx": b"fast graph bytes", "explain.onnx": b"explain graph bytes"}


def manifest_dict(folder: Path) -> dict[str, Any]:
    """A valid manifest for a 2-block ViT on 32 px, its graph files written into folder."""
    shapes = {LOGITS: ["batch", 3], EMBEDDING: ["batch", 32], ROLLOUT: ["batch", 16]}
    graphs = {}
    for role, file in ((FAST, "model.onnx"), (EXPLAIN, "explain.onnx")):
        (folder / file).write_bytes(GRAPH_BYTES[file])
        graphs[role] = {
            "file": file,
            "sha256": sha256_file(folder / file),
            "inputs": [{"name": INPUT, "shape": ["batch", 3, 32, 32], "dtype": "float32"}],
            "outputs": [
                {"name": name, "shape": shapes[name], "dtype": "float32"} for name in OUTPUTS[role]
            ],
            "fused_attention": 2 if role == FAST else 0,
        }
    validation = {
        "batch_sizes": [1, 3, 32],
        "images": 64,
        "outputs": {LOGITS: {"max_abs": 1e-7, "max_rel": 1e-6}},
        "top1_agreement": 1.0,
        "embedding_cosine_min": 0.99999,
    }
    return {
        "schema_version": 1,  # as written before uint8 graphs: no "pixels"
        "name": "tiny",
        "version": "1",
        "labels": ["a", "b", "c"],
        "image_size": 32,
        "patch_size": 8,
        "dim": 32,
        "depth": 2,
        "heads": 4,
        "preprocess": {
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "interpolation": "bicubic",
            "resize_mode": "squash",
            "crop_pct": 1.0,
        },
        "precision": "fp32",
        "graphs": graphs,
        "source": {"format": "native", "sha256": "cd" * 32},
        "versions": {"torch": "2", "onnx": "1", "onnxruntime": "1"},
        "validation": {FAST: validation, EXPLAIN: validation},
    }


def write(folder: Path, manifest: dict[str, Any]) -> Path:
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    manifest = BundleManifest.model_validate(manifest_dict(tmp_path))
    manifest.write(tmp_path)
    loaded = load_bundle(tmp_path)
    assert loaded == manifest
    assert (loaded.grid, loaded.num_patches) == ((4, 4), 16)
    assert [o.name for o in loaded.graphs[EXPLAIN].outputs] == [LOGITS, EMBEDDING, ROLLOUT]
    assert loaded.graphs[FAST].fused_attention == 2


def uint8(d: dict[str, Any]) -> dict[str, Any]:
    """d turned into a schema 2 manifest whose graphs take (B, 32, 32, 3) uint8 pixels."""
    d.update(schema_version=2, pixels={"dtype": "uint8", "layout": "NHWC"})
    for graph in d["graphs"].values():
        graph["inputs"] = [{"name": INPUT, "shape": ["batch", 32, 32, 3], "dtype": "uint8"}]
    return d


def test_a_manifest_without_pixels_means_the_float32_graphs_of_schema_1(tmp_path: Path) -> None:
    loaded = load_bundle(write(tmp_path, manifest_dict(tmp_path)))
    assert (loaded.schema_version, loaded.pixels) == (1, LEGACY_PIXELS)
    assert (loaded.pixels.dtype, loaded.pixels.layout) == ("float32", "NCHW")


def test_a_uint8_manifest_records_dtype_and_layout(tmp_path: Path) -> None:
    loaded = load_bundle(write(tmp_path, uint8(manifest_dict(tmp_path))))
    assert loaded.pixels == PixelFormat(dtype="uint8", layout="NHWC")
    assert loaded.pixels.shape(loaded.image_hw) == [32, 32, 3]


def test_fused_attention_defaults_to_zero_for_older_manifests(tmp_path: Path) -> None:
    d = manifest_dict(tmp_path)
    del d["graphs"]["fast"]["fused_attention"]
    assert load_bundle(write(tmp_path, d)).graphs["fast"].fused_attention == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(image_size=30), "not a multiple of 8"),
        (lambda d: d.update(heads=5), "not divisible by heads 5"),
        (lambda d: d["graphs"].pop("fast"), "graphs must include 'fast'"),
        (lambda d: d.update(labels=[]), r"logits has shape \['batch', 3\].*expected \[batch, 0\]"),
        (lambda d: d.update(precision="int4"), "precision"),
        (lambda d: d.update(schema_version=4), "schema_version"),
        (lambda d: d.update(pixels={"dtype": "uint8", "layout": "NCHW"}), "takes float32 pixels"),
        (lambda d: uint8(d).update(pixels={"dtype": "uint8"}), r"pixels has shape \[.*32, 3\]"),
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d["graphs"]["fast"].update(sha256="XYZ"), "sha256"),
        (lambda d: d["graphs"]["fast"].update(fused_attention=-1), "fused_attention"),
        (lambda d: d["preprocess"].update(crop_pct=0), "crop_pct"),
        (lambda d: d["preprocess"].update(mean=[0.5, 0.5]), "mean"),
        (lambda d: d.update(labels=["a", "b"]), r"logits has shape \['batch', 3\]"),
        (lambda d: d.update(dim=64, heads=4), "embedding has shape"),
        (lambda d: d.update(embedding={"name": "cls", "dim": 16}), "embedding has shape"),
        (lambda d: d.update(embedding={"name": "", "dim": 32}), "embedding.name"),
        (lambda d: d.update(attention="gradcam"), "attention"),
        (lambda d: d.update(image_size=64), "pixels has shape"),
        (lambda d: d["graphs"]["explain"].update(file="../model.onnx"), "file"),
        (
            lambda d: d["graphs"]["fast"]["outputs"].pop(1),
            r"fast graph lacks the output\(s\) embedding",
        ),
        (
            lambda d: d["graphs"]["explain"]["outputs"].pop(2),
            r"explain graph lacks the output\(s\) rollout",
        ),
        (
            lambda d: d["graphs"]["fast"]["inputs"][0].update(name="image"),
            r"fast graph takes inputs \['image'\]; the service feeds \['pixels'\]",
        ),
        (
            lambda d: d["graphs"]["explain"]["outputs"][2].update(shape=["batch", 4, 16]),
            r"explain graph: rollout has shape",
        ),
        (  # optional, but when present it must be (depth, heads): vit-inspect reads it so
            lambda d: d["graphs"]["explain"]["outputs"].append(
                {"name": ATTENTION_DISTANCE, "shape": ["batch", 4, 2], "dtype": "float32"}
            ),
            r"explain graph: attention_distance has shape .* expected \[batch, 2, 4\]",
        ),
    ],
    ids=[
        "patch-multiple",
        "heads-divide",
        "no-fast-graph",
        "no-labels-but-logits",
        "precision",
        "schema-version",
        "pixels-vs-graph-dtype",
        "pixels-vs-graph-layout",
        "unknown-field",
        "sha-pattern",
        "negative-fused",
        "crop-pct",
        "mean-length",
        "labels-vs-logits",
        "dim-vs-embedding",
        "embedding-dim-vs-graph",
        "embedding-name",
        "attention-kind",
        "size-vs-pixels",
        "file-outside-bundle",
        "fast-without-embedding",
        "explain-without-rollout",
        "wrong-input-name",
        "rollout-shape",
        "attention-distance-shape",
    ],
)
def test_invalid_manifest_is_a_bundle_error_naming_the_problem(
    tmp_path: Path, change: Any, message: str
) -> None:
    d = manifest_dict(tmp_path)
    change(d)
    with pytest.raises(BundleError, match=f"invalid manifest: .*{message}"):
        load_bundle(write(tmp_path, d))


def test_manifest_is_frozen(tmp_path: Path) -> None:
    manifest = BundleManifest.model_validate(manifest_dict(tmp_path))
    with pytest.raises(ValidationError):
        manifest.name = "other"  # type: ignore[misc]


def test_folder_without_manifest_says_so(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="model.json: not found .*made by vit-export"):
        load_bundle(tmp_path)


def test_manifest_that_is_not_json_is_a_bundle_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text("{ not json")
    with pytest.raises(BundleError, match="invalid manifest"):
        load_bundle(tmp_path)


def test_missing_graph_file_is_named(tmp_path: Path) -> None:
    write(tmp_path, manifest_dict(tmp_path))
    (tmp_path / "explain.onnx").unlink()
    with pytest.raises(BundleError, match="explain graph explain.onnx is missing"):
        load_bundle(tmp_path)


def test_replaced_graph_fails_its_sha256(tmp_path: Path) -> None:
    write(tmp_path, manifest_dict(tmp_path))
    (tmp_path / "model.onnx").write_bytes(b"another model of the same name")
    with pytest.raises(BundleError, match="model.onnx: sha256 does not match"):
        load_bundle(tmp_path)


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    expected = (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 "abc"
    )
    assert sha256_file(tmp_path / "f") == expected


def hybrid(d: dict[str, Any], h: int, w: int, stride: int = 4) -> dict[str, Any]:
    """d made a hybrid on an h×w input: a backbone of the given stride under 8-px patches."""
    d.update(image_size=[h, w], backbone={"stages": [1], "width": 1, "stride": stride})
    n = (h // (8 * stride)) * (w // (8 * stride))
    for graph in d["graphs"].values():
        graph["inputs"][0]["shape"] = ["batch", 3, h, w]
        for out in graph["outputs"]:
            if out["name"] == "rollout":
                out["shape"] = ["batch", n]
    return d


def test_a_non_square_hybrid_grid_counts_in_backbone_strides(tmp_path: Path) -> None:
    loaded = load_bundle(write(tmp_path, hybrid(manifest_dict(tmp_path), 64, 96)))
    assert loaded.backbone is not None and loaded.backbone.stages == [1]
    assert (loaded.image_hw, loaded.stride, loaded.grid) == ((64, 96), 32, (2, 3))
    assert loaded.num_patches == 6


def test_a_plain_manifest_has_no_backbone_and_a_square_grid(tmp_path: Path) -> None:
    loaded = load_bundle(write(tmp_path, manifest_dict(tmp_path)))  # as every older model.json
    assert loaded.backbone is None and loaded.image_hw == (32, 32) and loaded.stride == 8


def test_a_hybrid_input_off_the_token_stride_is_refused(tmp_path: Path) -> None:
    d = hybrid(manifest_dict(tmp_path), 64, 80)  # 80 is not a multiple of 4 · 8
    with pytest.raises(BundleError, match=r"image_size \(64, 80\) is not a multiple of 32"):
        load_bundle(write(tmp_path, d))


# --- schema 3: the published embedding, the attention map, models without a head --------------


def test_a_manifest_before_schema_3_publishes_the_cls_token(tmp_path: Path) -> None:
    # models/demo and models/fashion were written so: no "embedding", no "attention"
    for version in (1, 2):
        d = manifest_dict(tmp_path)
        d["schema_version"] = version
        loaded = load_bundle(write(tmp_path, d if version == 1 else uint8(d)))
        assert loaded.embedding == EmbeddingSpec(name="cls", dim=32, normalized=False)
        assert loaded.attention == "rollout" and loaded.has_head


def family(d: dict[str, Any], dim: int, logits: int) -> dict[str, Any]:
    """d as a schema 3 family member: an embedding of `dim` floats, `logits` classes."""
    d.update(schema_version=3, embedding={"name": "cls_projection", "dim": dim, "normalized": True})
    for graph in d["graphs"].values():
        for output in graph["outputs"]:
            if output["name"] == EMBEDDING:
                output["shape"] = ["batch", dim]
            if output["name"] == LOGITS:
                output["shape"] = ["batch", logits]
    return d


def test_a_projected_embedding_and_a_model_without_a_head(tmp_path: Path) -> None:
    d = family(manifest_dict(tmp_path), dim=16, logits=0)
    d.update(labels=[], attention="pooling")
    d["validation"]["fast"]["top1_agreement"] = None  # no classes to agree on
    d["validation"]["fast"]["outputs"]["logits"].update(float32_noise=1e-7, gate=1e-4)
    loaded = load_bundle(write(tmp_path, d))
    assert loaded.embedding == EmbeddingSpec(name="cls_projection", dim=16, normalized=True)
    assert (loaded.dim, loaded.attention, loaded.has_head) == (32, "pooling", False)
    v = loaded.validation["fast"]
    assert v.top1_agreement is None and v.outputs["logits"].gate == 1e-4
    BundleManifest.model_validate_json(loaded.model_dump_json())  # round-trips as written


def test_a_manifest_that_says_one_width_and_a_graph_another(tmp_path: Path) -> None:
    d = family(manifest_dict(tmp_path), dim=16, logits=3)
    d["embedding"]["dim"] = 32  # the graph answers 16
    with pytest.raises(BundleError, match=r"embedding has shape \['batch', 16\]"):
        load_bundle(write(tmp_path, d))
