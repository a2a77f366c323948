"""The graphs' pixel input: uint8 pixels in, the bundle's normalisation as the graph's first nodes.

    pixels (B, H, W, 3) uint8 ─Transpose─▶ (B, 3, H, W) uint8 ─Cast─▶ float32 ─·a + b─▶ the ViT
                                                                a = 1 / (255·std), b = −mean / std

The host then only decodes and resizes: it never makes a float copy of an image, and a batch
crosses host memory and PCIe in a quarter of the bytes. The transpose runs on the uint8 bytes,
before the cast, where it moves a quarter of the memory; (x / 255 − mean) / std is spelled as one
multiply and one add per pixel (a and b computed in float64, rounded once).

The nodes are put in front of a finished graph (fused, and for fp16 converted) rather than exported
from torch: they then stay float32 in an fp16 graph, followed by the converter's own Cast to
float16, so each normalised pixel is rounded to float16 once, as a float16 copy of the float32
reference input would be, instead of a float16 scale times a 0..255 value plus a float16 shift,
rounded at each step. Their cost is nothing beside the ViT's.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_export.export.graphs import Graph
from vit_core.bundle import INPUT, PixelFormat, Preprocess

_NORMALISED = "normalised_pixels"  # the ViT's own input, (B, 3, H, W) float32, renamed
_A, _B = "pixel_scale", "pixel_shift"  # (3, 1, 1) float32 initializers


def with_pixel_input(graph: Graph, fmt: PixelFormat, preprocess: Preprocess) -> Graph:
    """graph (float32 (B, 3, H, W) normalised INPUT) → the same graph taking INPUT as `fmt` says.
    A float32 format (the graphs of schema 1) leaves the graph as it is."""
    if fmt.dtype == "float32":
        return graph
    proto = onnx.ModelProto()
    proto.CopyFrom(graph.proto)
    g = proto.graph
    (old,) = g.input
    for node in g.node:
        node.input[:] = [_NORMALISED if name == INPUT else name for name in node.input]
    scale, shift = _affine(preprocess)
    g.initializer.extend([numpy_helper.from_array(v, n) for v, n in ((scale, _A), (shift, _B))])
    nodes = [*_front_nodes(fmt), *g.node]  # topological order: the front feeds everything else
    del g.node[:]
    g.node.extend(nodes)
    dims = [d.dim_param or d.dim_value for d in old.type.tensor_type.shape.dim]  # [batch, 3, H, W]
    shape = [dims[0], *fmt.shape((int(dims[2]), int(dims[3])))]
    del g.input[:]
    g.input.append(helper.make_tensor_value_info(INPUT, TensorProto.UINT8, shape))
    return Graph(proto, graph.fused_attention)


def _front_nodes(fmt: PixelFormat) -> list[onnx.NodeProto]:
    nodes, x = [], INPUT
    if fmt.layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["pixels_nchw"], perm=[0, 3, 1, 2]))
        x = "pixels_nchw"  # (B, 3, H, W) uint8
    nodes += [
        helper.make_node("Cast", [x], ["pixels_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["pixels_float", _A], ["pixels_scaled"]),
        helper.make_node("Add", ["pixels_scaled", _B], [_NORMALISED]),
    ]
    return nodes


def _affine(p: Preprocess) -> tuple[np.ndarray, ...]:
    """(a, b), each (3, 1, 1) float32 (broadcast over (B, 3, H, W)), such that
    x · a + b = (x / 255 − mean) / std."""
    mean, std = np.asarray(p.mean, np.float64), np.asarray(p.std, np.float64)
    scale, shift = 1 / (255 * std), -mean / std
    return tuple(v.astype(np.float32).reshape(3, 1, 1) for v in (scale, shift))
