"""uint8 graph input: NHWC (transpose in the graph) against NCHW (transpose on the host), on CPU.

    python bench/pixel_layout.py [--vit-b16] [--seconds 5]

PIL decodes to (H, W, 3). An NHWC graph takes those bytes as they are and transposes in-graph; an
NCHW graph needs the host to transpose each image while writing its batch row. Each cell times
what differs, end to end: B resized images written into a preallocated batch buffer, then one ORT
call. "front" is the normalisation alone (the graph's first nodes, nothing after them); "demo
size" a random ViT shaped like the demo bundle's (D 128, 4 blocks, 4 heads, patch 16, 224 px);
"ViT-B/16" a random one (its export takes about a minute). Each is exported and fused as
vit-export does. Fastest run of interleaved rounds, as bench/engine.py measures.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from model_export.export.graphs import FastGraph, Graph, export_graph, fuse_for_ort  # noqa: E402
from model_export.export.pixels import with_pixel_input  # noqa: E402
from model_export.model.presets import preset  # noqa: E402
from model_export.model.vit import ViT, ViTConfig  # noqa: E402
from vit_core.bundle import FAST, INPUT, OUTPUTS, PixelFormat, Preprocess  # noqa: E402

LAYOUTS = ("NHWC", "NCHW")
# The demo's normalisation; the front's cost does not depend on the values.
PREPROCESS = Preprocess(
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", resize_mode="squash",
    crop_pct=1.0,
)  # fmt: skip


def front_only(hw: tuple[int, int]) -> Graph:
    """A graph whose whole body is Identity: with the pixel input in front, the front alone."""
    x = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, *hw])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, *hw])
    graph = helper.make_graph([helper.make_node("Identity", [INPUT], ["out"])], "front", [x], [y])
    return Graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), 0)


def fused(config: ViTConfig) -> Graph:
    torch.manual_seed(0)
    model = ViT(config).eval()
    return fuse_for_ort(export_graph(FastGraph(model), config.image_hw, OUTPUTS[FAST]))


def cases(with_b16: bool) -> Iterator[tuple[str, Graph, tuple[int, ...]]]:
    yield "front", front_only((224, 224)), (1, 8, 32)
    demo = ViTConfig(image_size=224, patch_size=16, dim=128, depth=4, heads=4, mlp_dim=512)
    yield "demo size", fused(demo), (1, 8, 32)
    if with_b16:
        yield "ViT-B/16", fused(preset("vit-b16")), (1, 8)


def fill(buffer: np.ndarray, images: list[np.ndarray], layout: str) -> None:
    """What the service does per batch: each (H, W, 3) image into its row."""
    for row, image in zip(buffer, images, strict=False):
        row[...] = image if layout == "NHWC" else image.transpose(2, 0, 1)


def measure(graph: Graph, batch: int, seconds: float, preprocess: Preprocess) -> dict[str, float]:
    sessions, buffers = {}, {}
    h, w = graph.proto.graph.input[0].type.tensor_type.shape.dim[2:]
    hw = (h.dim_value, w.dim_value)
    for layout in LAYOUTS:
        fmt = PixelFormat(dtype="uint8", layout=layout)
        proto = with_pixel_input(graph, fmt, preprocess).proto
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[layout] = ort.InferenceSession(proto.SerializeToString(), options)
        buffers[layout] = np.empty((batch, *fmt.shape(hw)), np.uint8)
    rng = np.random.default_rng(0)
    images = list(rng.integers(0, 256, (batch, *hw, 3), dtype=np.uint8))
    best = dict.fromkeys(LAYOUTS, float("inf"))
    rounds, start = 0, time.perf_counter()
    while rounds < 3 or time.perf_counter() - start < seconds * len(LAYOUTS):
        for layout in LAYOUTS:
            t = time.perf_counter()
            fill(buffers[layout], images, layout)
            sessions[layout].run(None, {INPUT: buffers[layout]})
            best[layout] = min(best[layout], time.perf_counter() - t)
        rounds += 1
    return {layout: 1000 * t for layout, t in best.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vit-b16", action="store_true", help="also a random ViT-B/16 (slow)")
    p.add_argument("--seconds", type=float, default=5)
    args = p.parse_args()
    print("| graph | batch | NHWC ms | NCHW ms | NCHW / NHWC |\n|---|---|---|---|---|")
    for name, graph, batches in cases(args.vit_b16):
        for batch in batches:
            ms = measure(graph, batch, args.seconds, PREPROCESS)
            ratio = ms["NCHW"] / ms["NHWC"]
            print(f"| {name} | {batch} | {ms['NHWC']:.2f} | {ms['NCHW']:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
