"""uint8 graph input: NHWC (transpose in the graph) against NCHW (transpose on the host), on CPU.

    python bench/pixel_layout.py [--bundle models/demo] [--vit-b16] [--seconds 5]

PIL decodes to (H, W, 3). An NHWC graph takes those bytes as they are and transposes in-graph; an
NCHW graph needs the host to transpose each image while writing its batch row. Each cell times
what differs, end to end: B resized images written into a preallocated batch buffer, then one ORT
call. "front" is the normalisation alone (the graph's first nodes, nothing after them); "demo" the
bundle's fast graph; "ViT-B/16" a random one exported here (about a minute). Fastest run of
interleaved rounds, as bench/engine.py measures.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from model_export.export_graphs import Graph  # noqa: E402
from model_export.export_pixels import with_pixel_input  # noqa: E402
from service.bundle import (  # noqa: E402
    FAST,
    INPUT,
    LEGACY_PIXELS,
    PixelFormat,
    Preprocess,
    load_bundle,
)

LAYOUTS = ("NHWC", "NCHW")


def front_only(hw: tuple[int, int]) -> Graph:
    """A graph whose whole body is Identity: with the pixel input in front, the front alone."""
    x = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, *hw])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, *hw])
    graph = helper.make_graph([helper.make_node("Identity", [INPUT], ["out"])], "front", [x], [y])
    return Graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), 0)


def vit_b16() -> Graph:
    import torch

    from model_export.export_graphs import FastGraph, export_graph, fuse_for_ort
    from model_export.model import ViT
    from model_export.presets import preset
    from service.bundle import OUTPUTS

    torch.manual_seed(0)
    model = ViT(preset("vit-b16")).eval()
    return fuse_for_ort(export_graph(FastGraph(model), (224, 224), OUTPUTS[FAST]))


def cases(bundle: Path, with_b16: bool) -> Iterator[tuple[str, Graph, tuple[int, ...]]]:
    manifest = load_bundle(bundle)
    if manifest.pixels != LEGACY_PIXELS:
        raise SystemExit(f"{bundle}: needs a bundle whose graphs take float32 (schema 1)")
    yield "front", front_only(manifest.image_hw), (1, 8, 32)
    demo = onnx.load(bundle / manifest.graphs[FAST].file)
    yield f"demo ({manifest.name})", Graph(demo, 0), (1, 8, 32)
    if with_b16:
        yield "ViT-B/16", vit_b16(), (1, 8)


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
    p.add_argument("--bundle", type=Path, default=Path("models/demo"))
    p.add_argument("--vit-b16", action="store_true", help="also a random ViT-B/16 (slow)")
    p.add_argument("--seconds", type=float, default=5)
    args = p.parse_args()
    preprocess = load_bundle(args.bundle).preprocess
    print("| graph | batch | NHWC ms | NCHW ms | NCHW / NHWC |\n|---|---|---|---|---|")
    for name, graph, batches in cases(args.bundle, args.vit_b16):
        for batch in batches:
            ms = measure(graph, batch, args.seconds, preprocess)
            ratio = ms["NCHW"] / ms["NHWC"]
            print(f"| {name} | {batch} | {ms['NHWC']:.2f} | {ms['NCHW']:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
