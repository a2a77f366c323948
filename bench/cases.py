"""What bench/engine.py measures: a model's graphs (unoptimised, fast, explain), each in the
precisions vit-export writes: the demo bundle's, and random models of the paper's presets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir
import torch

from model_export.export.graphs import (
    ExplainGraph,
    FastGraph,
    Graph,
    count_fused_attention,
    export_graph,
    fuse_for_ort,
    to_fp16,
)
from model_export.export.int8 import to_int8
from model_export.formats.checkpoints import load_checkpoint
from model_export.model.presets import preset
from model_export.model.vit import ViT
from model_export.preprocessing import bundle_preprocess
from vit_core.bundle import EXPLAIN, FAST, OUTPUTS, Preprocess, load_bundle


@dataclass(frozen=True)
class Case:
    model: str
    graph: str  # unoptimised | fast | explain
    proto: onnx.ModelProto
    image_hw: tuple[int, int]  # the graph's input (H, W)
    preprocess: Preprocess  # how requests become its pixels (for the CUDA parity check)


def demo_cases(bundle: Path, checkpoint: Path) -> Iterator[Case]:
    manifest = load_bundle(bundle)
    name, size = f"{manifest.name} ({bundle})", manifest.image_hw
    if checkpoint.exists():
        model = load_checkpoint(checkpoint).model
        plain = ir.to_proto(export_graph(FastGraph(model), size, OUTPUTS[FAST]))
        yield Case(name, "unoptimised", plain, size, manifest.preprocess)
    if manifest.precision != "fp32":
        raise SystemExit(f"{bundle} is a {manifest.precision} bundle; the bench needs fp32 graphs")
    for role in (FAST, EXPLAIN):
        proto = onnx.load(bundle / manifest.graphs[role].file)
        yield Case(name, role, proto, size, manifest.preprocess)


def random_cases(name: str) -> Iterator[Case]:
    """A random model of a paper preset at 224 px (ViT-S/16, ViT-B/16: the sizes users bring)."""
    torch.manual_seed(0)
    config = preset(name)
    model = ViT(config).eval()
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    paper = f"ViT-{name[4:-2].capitalize()}/{name[-2:]}"  # vit-s16 → ViT-S/16, vit-ti16 → ViT-Ti/16
    label = f"random {paper} ({millions:.0f}M params, 224 px)"
    size, preprocess = config.image_hw, bundle_preprocess(config)
    plain = export_graph(FastGraph(model), size, OUTPUTS[FAST])
    # a copy: fusion rewrites in place
    yield Case(label, "unoptimised", ir.to_proto(plain), size, preprocess)
    yield Case(label, "fast", fuse_for_ort(plain).proto, size, preprocess)
    explain = fuse_for_ort(export_graph(ExplainGraph(model), size, OUTPUTS[EXPLAIN]))
    yield Case(label, "explain", explain.proto, size, preprocess)


def graph_for(case: Case, precision: str) -> onnx.ModelProto | None:
    """The case's graph in this precision, as vit-export would write it; None: not shipped."""
    if precision == "fp32":
        return case.proto
    if case.graph == "unoptimised":
        return None  # fp16 and int8 ship only as the fused graphs
    graph = Graph(case.proto, count_fused_attention(case.proto))
    return (to_fp16(graph) if precision == "fp16" else to_int8(graph)).proto
