"""The two ONNX graphs of a bundle and how they are made: export, ORT fusion, float16.

FAST    pixels (B, 3, H, W) → logits (B, K), embedding (B, D); attention fused into one kernel.
EXPLAIN the same plus rollout (B, N) and cls_attention (B, heads, N), N = patches, computed inside
        the graph so no (L, heads, N+1, N+1) tensor ever crosses the session boundary.

Exporter choice: torch.onnx's dynamo exporter. Its graph spells scaled_dot_product_attention as
MatMul → Softmax → MatMul with the scale split over q and k, which onnxscript's ORT fusion rules
("sdpa" then "sdpa_via_mha") rewrite into com.microsoft MultiHeadAttention, one per block. Neither
the TorchScript export nor onnxruntime.transformers' "vit" optimizer fuses attention for this model:
that optimizer matches Hugging Face's separate q/k/v projections, not the packed qkv used here.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import onnx
import onnx_ir as ir
import torch
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxscript.rewriter import ort_fusions
from torch import nn

from model_export.model import ViT

OPSET = 18  # >= 17 for LayerNormalization; 18 is the dynamo exporter's native opset
INPUT = "pixels"
FAST_OUTPUTS = ("logits", "embedding")
EXPLAIN_OUTPUTS = ("logits", "embedding", "rollout", "cls_attention")
FUSED_ATTENTION_OPS = frozenset({"Attention", "MultiHeadAttention"})  # com.microsoft kernels
MS_DOMAIN = "com.microsoft"

# The exporter logs a warning per torchvision op it cannot register; this project never uses them.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


class ExportError(ValueError):
    """The model cannot be exported, or its graphs failed a check; the message says why."""


class FastGraph(nn.Module):
    """ViT → (logits, embedding): the serving graph."""

    def __init__(self, vit: ViT) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.vit(pixels)
        return out.logits, out.embedding  # (B, K), (B, D)


class ExplainGraph(nn.Module):
    """ViT(attention=True) → (logits, embedding, rollout, cls_attention)."""

    def __init__(self, vit: ViT) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.vit(pixels, attention=True)
        weights = out.attentions  # (B, L, H, T, T), T = N + 1 tokens with [CLS] first
        assert weights is not None
        rollout = attention_rollout(weights)[:, 0, 1:]  # (B, N): [CLS] row over the patches
        cls_attention = weights[:, -1, :, 0, 1:]  # (B, H, N): last layer, [CLS] → patches
        return out.logits, out.embedding, rollout, cls_attention


def attention_rollout(weights: torch.Tensor) -> torch.Tensor:
    """Abnar & Zuidema (2020): R = A_L' · … · A_1', A' = rownorm(mean_heads(A) + I).

    weights (B, L, H, T, T) → R (B, T, T). The identity stands for the residual connection.
    """
    a = weights.mean(dim=2)  # (B, L, T, T)
    a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    a = a / a.sum(dim=-1, keepdim=True)
    r = a[:, 0]
    for layer in range(1, a.shape[1]):
        r = a[:, layer] @ r  # later layers multiply from the left
    return r


@dataclass(frozen=True)
class Graph:
    proto: onnx.ModelProto
    fused_attention: int  # com.microsoft attention nodes, one per block when fusion worked


def export_graph(module: nn.Module, image_size: int, outputs: Sequence[str]) -> ir.Model:
    """torch → ONNX IR with a dynamic batch axis named "batch"."""
    example = torch.zeros(2, 3, image_size, image_size)  # batch 2: 0/1 would be specialised
    with warnings.catch_warnings():
        # torch.export's own pytree code trips its LeafSpec deprecation; nothing for us to act on.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        program = torch.onnx.export(
            module.eval(),
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=list(outputs),
            dynamic_shapes={INPUT: {0: torch.export.Dim("batch")}},
            verbose=False,
        )
    assert program is not None
    return program.model


def fuse_for_ort(model: ir.Model) -> Graph:
    """Apply onnxscript's ORT fusions (attention, SkipLayerNorm, BiasGelu) and count attention."""
    fused, _counts = ort_fusions.optimize_for_ort(model)
    proto = ir.to_proto(fused)
    return Graph(proto, count_fused_attention(proto))


def count_fused_attention(proto: onnx.ModelProto) -> int:
    return sum(
        1 for n in proto.graph.node if n.domain == MS_DOMAIN and n.op_type in FUSED_ATTENTION_OPS
    )


def to_fp16(graph: Graph) -> Graph:
    """Weights and compute in float16; pixels in and every output stay float32."""
    half = ir.from_proto(convert_float_to_float16(graph.proto, keep_io_types=True))
    half.graph.sort()  # the converter appends its input Casts after their consumers
    proto = ir.to_proto(half)
    return Graph(proto, count_fused_attention(proto))
