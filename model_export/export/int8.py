"""INT8 for CPU hosts: ONNX Runtime's dynamic quantisation of a built graph's dense layers.

What becomes int8 (weights int8 per output channel, activations uint8 with a scale computed per
run): every MatMul with a constant weight (the MLP's fc1 and fc2, the attention output projection,
the head, which the quantiser turns from Gemm into MatMul first) and the fused com.microsoft
Attention, which becomes QAttention (the packed qkv projection in int8, softmax and the two
attention products in float32). Everything else stays float32: LayerNorm, BiasGelu, softmax, the
patch embedding's Conv (as much work as one D×D projection, against 12 per block), and the
explain graph's q·kᵀ and attention·v products, whose operands are activations on both sides
(MatMulConstBOnly), so the attention weights the rollout multiplies are never rounded to 8 bits.

Why dynamic, not static (measured on a random ViT-S/16, docs/benchmarks.md): static quantisation
has no int8 form for the fused Attention (neither QDQ nor QOperator lists it), so a quarter of
every block's weights stayed float32 and every activation went through Quantize/Dequantize pairs:
1.74× fp32 against dynamic's 2.33×, and a lower embedding cosine (0.9952 against 0.9973), with
calibration images to choose. Dynamic needs none: it measures each activation's range per batch.

No pre-processing pass (quant_pre_process): its shape inference is already done by fuse_for_ort,
and its optimiser left this graph unchanged, so the quantiser's advice to run it is silenced here.
Quantisation runs on the finished graph, so it works whatever input the graph takes.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from model_export.export.graphs import Graph, count_fused_attention

INT8_OP_TYPES = ["MatMul", "Attention"]  # Gemm too: the quantiser rewrites it as MatMul + Add


@dataclass(frozen=True)
class Int8Gate:
    """What an int8 graph must keep of the float32 model to be written, per the project's issue.

    Checked against PyTorch (the fp32 graph agrees with it to 1e-4) on the exporter's check images.
    """

    min_top1: float = 0.99  # images whose arg-max class is PyTorch's
    min_cosine: float = 0.99  # worst embedding cosine over the images
    # worst per-image Pearson correlation of the rollout with PyTorch's: a map that still points at
    # the same patches; the trained demo keeps 0.9997, so 0.95 is far from noise and from a pass
    min_rollout_correlation: float = 0.95


INT8_GATE = Int8Gate()


def to_int8(graph: Graph) -> Graph:
    """The graph with its dense layers in int8 (module docstring: which, why); IO stays float32."""
    with tempfile.TemporaryDirectory() as folder, _quiet_preprocess_advice():
        out = Path(folder) / "int8.onnx"
        quantize_dynamic(
            graph.proto,
            out,
            op_types_to_quantize=INT8_OP_TYPES,
            per_channel=True,  # one scale per output channel: kept top-1 where per-tensor lost some
            weight_type=QuantType.QInt8,  # s8 weights × u8 activations: the VNNI kernels' form
            extra_options={"MatMulConstBOnly": True},  # weights only, never activation × activation
        )
        proto = onnx.load(out)
    return Graph(proto, count_fused_attention(proto))


class _DropPreprocessAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _quiet_preprocess_advice() -> Iterator[None]:
    """quantize_dynamic logs on the root logger that pre-processing may help; here it does not."""
    root = logging.getLogger()
    drop = _DropPreprocessAdvice()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
