"""ONNX Runtime throughput of the three graphs a ViT can be served from, by batch size.

    python bench/engine.py [--bundle models/demo] [--checkpoint checkpoints/demo] [--seconds 2]

unoptimised  torch.onnx's dynamo export as it comes (what a plain export would serve)
fast         the bundle's model.onnx: packed-qkv Attention and BiasGelu fused for ORT
explain      the bundle's explain.onnx: explicit attention weights, rollout inside the graph

Rows cover the demo bundle (when it exists) and a random ViT-B/16 exported here. The float32 rows
come twice: with ORT's default online optimisations (ORT_ENABLE_ALL), so fast ÷ unoptimised is
what the offline fusion adds on top of what ORT does anyway when it loads a plain export, and with
them off (ORT_DISABLE_ALL), which shows the graphs as written. All sessions of one model and
provider are timed in the same interleaved rounds. CUDA columns appear only where the CUDA
provider is installed and a GPU answers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from model_export.checkpoints import load_checkpoint  # noqa: E402
from model_export.export_graphs import (  # noqa: E402
    ExplainGraph,
    FastGraph,
    Graph,
    count_fused_attention,
    export_graph,
    fuse_for_ort,
    to_fp16,
)
from model_export.model import ViT  # noqa: E402
from model_export.presets import preset  # noqa: E402
from service.bundle import EXPLAIN, FAST, INPUT, MANIFEST, OUTPUTS, load_bundle  # noqa: E402

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
MIN_ROUNDS = 3
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Case:
    model: str
    graph: str  # unoptimised | fast | explain
    proto: onnx.ModelProto
    image_hw: tuple[int, int]  # the graph's input (H, W)


@dataclass(frozen=True)
class Column:
    provider: str
    precision: str  # fp32 | fp16 (fp16 only on CUDA: CPU kernels compute float16 slowly)
    online: bool = True  # ORT's load-time graph optimisations: ENABLE_ALL, or DISABLE_ALL


def _pixels(session: ort.InferenceSession, batch: int) -> np.ndarray:
    """Random pixels as the graph takes them: uint8 (B, H, W, 3), or float32 (B, 3, H, W)."""
    spec, rng = session.get_inputs()[0], np.random.default_rng(0)
    shape = (batch, *spec.shape[1:])
    if spec.type == "tensor(uint8)":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


def best_images_per_second(
    sessions: dict[K, ort.InferenceSession], batch: int, seconds: float
) -> dict[K, float]:
    """Interleaved rounds, one run of every graph each, for `seconds` per graph (3 rounds at least);
    the fastest run of each graph counts.

    On a shared machine other work slows runs down at random but never speeds them up, so the
    minimum is the estimate least disturbed by it (timeit's reasoning), and interleaving spreads
    any slow patch over all graphs alike.
    """
    feeds = {key: {INPUT: _pixels(s, batch)} for key, s in sessions.items()}
    for key, session in sessions.items():
        session.run(None, feeds[key])  # warm-up: the first run allocates buffers and picks kernels
    best = dict.fromkeys(sessions, float("inf"))
    rounds, start = 0, time.perf_counter()
    while rounds < MIN_ROUNDS or time.perf_counter() - start < seconds * len(sessions):
        for graph, session in sessions.items():
            t = time.perf_counter()
            session.run(None, feeds[graph])
            best[graph] = min(best[graph], time.perf_counter() - t)
        rounds += 1
    return {graph: batch / t for graph, t in best.items()}


def demo_cases(bundle: Path, checkpoint: Path) -> Iterator[Case]:
    manifest = load_bundle(bundle)
    name, size = f"{manifest.name} ({bundle})", manifest.image_hw
    if checkpoint.exists():
        model = load_checkpoint(checkpoint).model
        plain = ir.to_proto(export_graph(FastGraph(model), size, OUTPUTS[FAST]))
        yield Case(name, "unoptimised", plain, size)
    for role in (FAST, EXPLAIN):
        yield Case(name, role, onnx.load(bundle / manifest.graphs[role].file), size)


def vit_b16_cases() -> Iterator[Case]:
    """A random ViT-B/16 at 224 px: the paper's base model, the size users bring."""
    torch.manual_seed(0)
    model = ViT(preset("vit-b16")).eval()
    name = "random ViT-B/16 (86M params, 224 px)"
    size = (224, 224)
    plain = export_graph(FastGraph(model), size, OUTPUTS[FAST])
    yield Case(name, "unoptimised", ir.to_proto(plain), size)  # a copy: fusion rewrites in place
    yield Case(name, "fast", fuse_for_ort(plain).proto, size)
    explain = fuse_for_ort(export_graph(ExplainGraph(model), size, OUTPUTS[EXPLAIN]))
    yield Case(name, "explain", explain.proto, size)


def session_for(case: Case, column: Column, threads: int) -> ort.InferenceSession | None:
    """A session for this cell, or None for cells that are not measured."""
    proto = case.proto
    if column.precision == "fp16":
        if case.graph == "unoptimised":
            return None  # fp16 ships only as the fused graphs
        proto = to_fp16(Graph(proto, count_fused_attention(proto))).proto
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ORT's default, one per physical core
    if not column.online:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=[column.provider])
    if session.get_providers()[0] != column.provider:  # ORT fell back (to the CPU) silently
        print(f"  {column.provider} asked for, {session.get_providers()[0]} given: column skipped",
              file=sys.stderr)  # fmt: skip
        return None
    return session


def columns() -> list[Column]:
    cols = [Column(CPU, "fp32"), Column(CPU, "fp32", online=False)]
    if CUDA in ort.get_available_providers():
        cols += [Column(CUDA, "fp32"), Column(CUDA, "fp32", online=False), Column(CUDA, "fp16")]
    return cols


def measure(
    cases: list[Case], cols: list[Column], batches: list[int], seconds: float, threads: int = 0
) -> dict[tuple[str, str, Column], dict[int, float]]:
    """(model, graph, column) → {batch: images/s}; a model's graphs are timed side by side, with
    and without ORT's online optimisations in the same rounds."""
    results: dict[tuple[str, str, Column], dict[int, float]] = {}
    models = list(dict.fromkeys(c.model for c in cases))
    for model in models:
        group = [c for c in cases if c.model == model]
        for device in dict.fromkeys((col.provider, col.precision) for col in cols):
            sessions = {
                (c.graph, col): s
                for col in cols
                if (col.provider, col.precision) == device
                for c in group
                if (s := session_for(c, col, threads)) is not None
            }
            for batch in batches:
                ips = best_images_per_second(sessions, batch, seconds)
                for (graph, col), value in ips.items():
                    results.setdefault((model, graph, col), {})[batch] = value
                print(f"  measured {model}, {' '.join(device)}, batch {batch}", file=sys.stderr)
    return dict(
        sorted(results.items(), key=lambda kv: (models.index(kv[0][0]), cols.index(kv[0][2])))
    )


def table(results: dict[tuple[str, str, Column], dict[int, float]], batches: list[int]) -> str:
    """Markdown: one row per (model, graph, provider), then fast ÷ unoptimised per model."""
    head = "| model | graph | provider | " + " | ".join(f"batch {b}" for b in batches) + " |"
    lines = [head, "|" + "---|" * (3 + len(batches))]
    for (model, graph, col), per_batch in results.items():
        cells = " | ".join(f"{per_batch[b]:.1f}" for b in batches)
        lines.append(f"| {model} | {graph} | {_provider(col)} | {cells} |")
        plain = results.get((model, "unoptimised", col))
        if graph == "fast" and plain:
            ratios = " | ".join(f"**{per_batch[b] / plain[b]:.2f}×**" for b in batches)
            lines.append(f"| {model} | fast ÷ unoptimised | {_provider(col)} | {ratios} |")
    return "\n".join(lines)


def _provider(col: Column) -> str:
    online = "" if col.online else ", no online opt."
    return f"{col.provider.removesuffix('ExecutionProvider')} {col.precision}{online}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("models/demo"))
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=Path("checkpoints/demo"),
        help="source of the demo's unoptimised graph (skipped when absent)",
    )
    p.add_argument("--seconds", type=float, default=2.0, help="time per graph and batch size")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="ORT intra-op threads (0: one per core; 1 on a machine shared with other work, "
        "where spinning worker threads fight the other processes for the cores)",
    )
    p.add_argument("--no-vit-b", action="store_true", help="skip the ViT-B/16-sized model")
    args = p.parse_args(argv)

    cases: list[Case] = []
    notes = []
    if (args.bundle / MANIFEST).is_file():
        cases += demo_cases(args.bundle, args.checkpoint)
        if not args.checkpoint.exists():
            notes.append(f"{args.checkpoint} not found: no unoptimised row for the demo bundle")
    else:
        notes.append(f"{args.bundle} has no bundle yet (run `make bundle`): demo rows skipped")
    if not args.no_vit_b:
        cases += vit_b16_cases()
    cols = columns()
    if len(cols) == 1:
        notes.append("CUDAExecutionProvider not available: CUDA fp32/fp16 columns skipped")

    results = measure(cases, cols, args.batches, args.seconds, args.threads)
    threads = args.threads or "default"
    print(
        f"ONNX Runtime {ort.__version__}, images/s; {_machine()}; {threads} intra-op threads; "
        f"best of >= {MIN_ROUNDS} interleaved runs, {args.seconds:g} s per graph and batch size\n"
    )
    print(table(results, args.batches))
    for note in notes:
        print(f"\nnote: {note}")
    return 0


def _machine() -> str:
    return f"{os.cpu_count()} CPU cores ({platform.machine()})"


if __name__ == "__main__":
    sys.exit(main())
