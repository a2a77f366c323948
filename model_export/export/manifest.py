"""What model.json says about each graph, a hybrid's backbone, and where the weights came from."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import onnx

from model_export.export.graphs import Graph
from model_export.model.vit import ViTConfig
from vit_core.bundle import Backbone, DType, GraphSpec, TensorSpec, sha256_file

_DTYPES: dict[int, DType] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.UINT8: "uint8",
}


def graph_spec(graph: Graph, path: Path) -> GraphSpec:
    g = graph.proto.graph
    return GraphSpec(
        file=path.name,
        sha256=sha256_file(path),
        inputs=[_tensor_spec(v) for v in g.input],
        outputs=[_tensor_spec(v) for v in g.output],
        fused_attention=graph.fused_attention,
    )


def backbone_spec(config: ViTConfig) -> Backbone | None:
    if config.backbone is None:
        return None
    stride = config.stride // config.patch_size  # the backbone's own, before the patches
    return Backbone(stages=list(config.backbone), width=config.backbone_width, stride=stride)


def _tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    t = value.type.tensor_type
    shape: list[int | str] = [d.dim_param or d.dim_value for d in t.shape.dim]
    return TensorSpec(name=value.name, shape=shape, dtype=_DTYPES[t.elem_type])


def tool_versions() -> dict[str, str]:
    names = ("torch", "onnx", "onnxruntime", "onnxscript")
    return {n: importlib.metadata.version(n) for n in names}


def source_sha256(path: Path) -> str:
    """sha256 of the weights a checkpoint holds: the file itself, or the weight files in a folder.

    A folder with a single weights file gets that file's own digest, so it can be compared with
    `sha256sum`; with several, the digest of their digests in name order.
    """
    if path.is_file():
        return sha256_file(path)
    suffixes = {".safetensors", ".bin", ".pt", ".pth", ".npz"}
    files = sorted(p for p in path.iterdir() if p.suffix in suffixes and p.is_file())
    if len(files) == 1:
        return sha256_file(files[0])
    digests = "".join(sha256_file(f) for f in files)
    return hashlib.sha256(digests.encode()).hexdigest()
