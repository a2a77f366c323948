"""ONNX Runtime throughput of the three graphs a ViT can be served from, by batch size.

    python bench/engine.py [--bundle models/demo] [--checkpoint checkpoints/demo] [--seconds 2]

unoptimised  torch.onnx's dynamo export as it comes (what a plain export would serve)
fast         the bundle's model.onnx: packed-qkv Attention and BiasGelu fused for ORT
explain      the bundle's explain.onnx: explicit attention weights, rollout inside the graph

Rows cover the demo bundle (when it exists) and random ViT-S/16 and ViT-B/16 exported here. The
float32 rows come twice: with ORT's default online optimisations (ORT_ENABLE_ALL), so fast ÷
unoptimised is what the offline fusion adds on top of what ORT does anyway when it loads a plain
export, and with them off (ORT_DISABLE_ALL), which shows the graphs as written. The int8 rows are
the fast and explain graphs as `vit-export --precision int8` quantises them, with int8 ÷ fp32 per
graph. Every row names the provider its session reports it got. All sessions of one model and
provider are timed in the same interleaved rounds. CUDA columns appear only where the CUDA
provider is installed and a GPU answers; there the fp16 graphs are also checked against the fp32
ones on CUDA (bench/cuda_parity.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from cases import Case, demo_cases, graph_for, random_cases  # noqa: E402
from cuda_parity import check_fp16_on_cuda  # noqa: E402

from model_export.model.presets import PRESETS  # noqa: E402
from vit_core.bundle import INPUT, MANIFEST  # noqa: E402

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
MIN_ROUNDS = 3
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Column:
    provider: str
    precision: str  # fp32 | fp16 (only on CUDA: CPU kernels compute float16 slowly) | int8 (CPU)
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


def session_for(case: Case, column: Column, threads: int) -> ort.InferenceSession | None:
    """A session for this cell, or None for cells that are not measured."""
    proto = graph_for(case, column.precision)
    if proto is None:
        return None
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
    cols = [Column(CPU, "fp32"), Column(CPU, "fp32", online=False), Column(CPU, "int8")]
    if CUDA in ort.get_available_providers():
        cols += [Column(CUDA, "fp32"), Column(CUDA, "fp32", online=False), Column(CUDA, "fp16")]
    return cols


Key = tuple[str, str, Column]  # (model, graph, column)


@dataclass(frozen=True)
class Results:
    ips: dict[Key, dict[int, float]]  # batch → images/s
    got: dict[Key, list[str]]  # the providers each session reports it runs on, in order


def measure(
    cases: list[Case], cols: list[Column], batches: list[int], seconds: float, threads: int = 0
) -> Results:
    """A model's graphs on one provider are timed side by side: fp32 with and without ORT's online
    optimisations and int8 in the same rounds, so their ratios share the same disturbances."""
    ips: dict[Key, dict[int, float]] = {}
    got: dict[Key, list[str]] = {}
    models = list(dict.fromkeys(c.model for c in cases))
    for model in models:
        group = [c for c in cases if c.model == model]
        for provider in dict.fromkeys(col.provider for col in cols):
            sessions = {
                (c.graph, col): s
                for col in cols
                if col.provider == provider
                for c in group
                if (s := session_for(c, col, threads)) is not None
            }
            for (graph, col), session in sessions.items():
                got[(model, graph, col)] = session.get_providers()
            for batch in batches:
                per_graph = best_images_per_second(sessions, batch, seconds)
                for (graph, col), value in per_graph.items():
                    ips.setdefault((model, graph, col), {})[batch] = value
                print(f"  measured {model}, {provider}, batch {batch}", file=sys.stderr)
    order = sorted(ips, key=lambda k: (models.index(k[0]), cols.index(k[2])))
    return Results({k: ips[k] for k in order}, got)


def table(results: Results, batches: list[int]) -> str:
    """Markdown: one row per (model, graph, column) with the providers its session got, each
    followed by its ratio row where it has one."""
    head = "| model | graph | column | session got | " + " | ".join(f"batch {b}" for b in batches)
    lines = [head + " |", "|" + "---|" * (4 + len(batches))]
    for key, per_batch in results.ips.items():
        model, graph, col = key
        got = ", ".join(p.removesuffix("ExecutionProvider") for p in results.got[key])
        cells = _cells(per_batch, batches)
        lines.append(f"| {model} | {graph} | {_column(col)} | {got} | {cells} |")
        if ratio := _ratio_row(results, key, batches):
            lines.append(ratio)
    return "\n".join(lines)


def _ratio_row(results: Results, key: Key, batches: list[int]) -> str | None:
    """fast ÷ unoptimised in the same column; int8 ÷ fp32 per graph, online optimisations on."""
    model, graph, col = key
    if col.precision == "int8":
        base, what = (model, graph, Column(col.provider, "fp32")), f"{graph} int8 ÷ fp32"
    elif graph == "fast":
        base, what = (model, "unoptimised", col), "fast ÷ unoptimised"
    else:
        return None
    if base not in results.ips:
        return None
    ratio = {b: results.ips[key][b] / results.ips[base][b] for b in batches}
    return f"| {model} | {what} | {_column(col)} | | {_cells(ratio, batches, '×')} |"


def _cells(per_batch: dict[int, float], batches: list[int], unit: str = "") -> str:
    if unit:
        return " | ".join(f"**{per_batch[b]:.2f}{unit}**" for b in batches)
    return " | ".join(f"{per_batch[b]:.1f}" for b in batches)


def _column(col: Column) -> str:
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
    p.add_argument(
        "--presets",
        nargs="*",
        default=["vit-s16", "vit-b16"],
        choices=sorted(PRESETS),
        help="paper presets to export with random weights and measure (none: only the bundle)",
    )
    args = p.parse_args(argv)

    cases: list[Case] = []
    notes = []
    if (args.bundle / MANIFEST).is_file():
        cases += demo_cases(args.bundle, args.checkpoint)
        if not args.checkpoint.exists():
            notes.append(f"{args.checkpoint} not found: no unoptimised row for the demo bundle")
    else:
        notes.append(f"{args.bundle} has no bundle yet (run `make bundle`): demo rows skipped")
    for name in args.presets:
        cases += random_cases(name)
    cols = columns()
    if not any(col.provider == CUDA for col in cols):
        notes.append("CUDAExecutionProvider not available: CUDA fp32/fp16 columns skipped")
    notes += check_fp16_on_cuda(cases)

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
