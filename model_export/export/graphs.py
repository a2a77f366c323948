"""The two ONNX graphs of a bundle and how they are made: export, ORT fusion, float16.

FAST    pixels (B, 3, H, W) → logits (B, K), embedding (B, D); attention fused into one kernel.
EXPLAIN the same plus rollout (B, N) and attention_distance (B, L, heads), N = patches, computed
        inside the graph so no (L, heads, T, T) tensor ever crosses the session boundary.
The tensor names are vit_core.bundle's; each graph's `outputs` lists them in its forward's order.

Exporter choice: torch.onnx's dynamo exporter. Its graph spells scaled_dot_product_attention as
MatMul → Softmax → MatMul with the scale split over q and k, which onnxscript's ORT fusion rules
("sdpa" then "mha") rewrite into com.microsoft MultiHeadAttention; our own rule then folds the qkv
projection in front of it into com.microsoft Attention, one per block. Neither the TorchScript
export nor onnxruntime.transformers' "vit"/"bert" optimizer fuses attention for this model: that
optimizer matches Hugging Face's separate q/k/v projections, not the packed qkv used here.

Which fusions, by ORT's profiler (docs/benchmarks.md): Attention with the packed qkv weights runs
the projection and attention in one CPU kernel; Erf-GELU + bias → BiasGelu. Not
SkipLayerNormalization in float32: ORT's CPU kernel takes about 4x the time of the Add and
LayerNormalization it replaces, which made the fused graph slower than a plain export. The fp16
graph, which is made for the CUDA provider (CPU kernels compute float16 slowly), keeps it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import torch
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxscript.optimizer import optimize
from onnxscript.rewriter import pattern, rewrite
from onnxscript.rewriter.ort_fusions import ORT_PATTERN_REWRITE_RULES, shape_optimization
from onnxscript.rewriter.ort_fusions.bias_gelu import fuse_bias_gelu
from onnxscript.rewriter.ort_fusions.erfgelu import fuse_erfgelu
from onnxscript.rewriter.ort_fusions.mha import fuse_mha2
from onnxscript.rewriter.ort_fusions.sdpa import fuse_sdpa
from onnxscript.rewriter.ort_fusions.sdpa_via_mha import replace_sdpa_by_mha
from onnxscript.rewriter.ort_fusions.skip_normalization import fuse_skip_layer_normalization
from torch import nn

from model_export.model.attention_distance import attention_distance, patch_distances, token_layout
from model_export.model.vit import ViT, ViTConfig
from vit_core.bundle import ATTENTION_DISTANCE, EXPLAIN, FAST, INPUT, OUTPUTS, AttentionKind

OPSET = 18  # >= 17 for LayerNormalization; 18 is the dynamo exporter's native opset
FUSED_ATTENTION_OPS = frozenset({"Attention", "MultiHeadAttention", "QAttention"})  # com.microsoft
MS_DOMAIN = "com.microsoft"

# The exporter logs a warning per torchvision op it cannot register; this project never uses them.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


class ExportError(ValueError):
    """The model cannot be exported, or its graphs failed a check; the message says why."""


class FastGraph(nn.Module):
    """ViT → (logits, embedding), the order of OUTPUTS[FAST]: the serving graph."""

    outputs = OUTPUTS[FAST]

    def __init__(self, vit: ViT) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.vit(pixels)
        return out.logits, out.embedding  # (B, K), (B, D)


class ExplainGraph(nn.Module):
    """ViT(attention=True) → OUTPUTS[EXPLAIN] (logits, embedding, rollout), then the mean attention
    distance, which the service never fetches: vit-inspect reads it, so bundles can be inspected.

    The map (B, N) is over the patch grid alone, whatever tokens come before the patches (class,
    distillation, registers): the attention rollout's [CLS] row, or for a model without a class
    token (SigLIP) its pooling head's attention over the patches, averaged over heads
    (attention_kind says which)."""

    outputs = (*OUTPUTS[EXPLAIN], ATTENTION_DISTANCE)

    def __init__(self, vit: ViT) -> None:
        super().__init__()
        self.vit = vit
        # (N, N) pixels between patch centres: one constant of the graph, not recomputed per call
        self.register_buffer("distances", patch_distances(token_layout(vit.config)), False)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.vit(pixels, attention=True)
        weights = out.attentions  # (B, L, H, T, T), T = P + N tokens, the P before the patches
        assert weights is not None
        if out.pool_attention is not None:  # (B, H, N): the pooling query's over the patches
            patch_map = out.pool_attention.mean(dim=1)  # (B, N)
        else:
            p = self.vit.config.prefix_tokens  # [CLS] first, then the others before the patches
            patch_map = attention_rollout(weights)[:, 0, p:]  # (B, N): [CLS] row over the patches
        distance = attention_distance(weights, self.distances)  # (B, L, H) in pixels
        return out.logits, out.embedding, patch_map, distance


def attention_kind(config: ViTConfig) -> AttentionKind:
    """What the explain graph's map shows: "pooling" for an attention-pooled model (SigLIP),
    else "rollout"."""
    return "pooling" if config.pool == "map" else "rollout"


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


def export_graph(module: nn.Module, image_hw: tuple[int, int], outputs: Sequence[str]) -> ir.Model:
    """torch → ONNX IR for (B, 3, H, W) input with a dynamic batch axis named "batch"."""
    example = torch.zeros(2, 3, *image_hw)  # batch 2: 0/1 would be specialised
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
    """ORT fusions for attention and GELU (module docstring: why these); counts attention.

    onnxscript's optimize_for_ort, with its fusion list cut to what this ViT uses and measurably
    helps: no SkipLayerNormalization (slower on CPU), plus packed-qkv Attention.
    """
    common_passes.ShapeInferencePass()(model)  # the sdpa rules check shapes
    optimize(model)  # constant folding, dead code, Reshape chains
    shape_optimization.rules.apply_to_model(model)
    optimize(model)
    fuse_erfgelu(model)  # x·Φ(x) spelled with Erf → Gelu
    fuse_sdpa(model, apply_shape_inference=True)  # MatMul → Softmax → MatMul → SDPA
    fuse_mha2(model)  # SDPA with its head reshapes and transposes → MultiHeadAttention
    replace_sdpa_by_mha(model)  # any SDPA the previous rule did not take
    fuse_bias_gelu(model)  # Add(bias) → Gelu → BiasGelu
    optimize(model)
    rewrite(model, [_PackedQkvAttention.rule()])  # qkv MatMul + bias + Split + MHA → Attention
    rewrite(model, ORT_PATTERN_REWRITE_RULES)  # FusedMatMul and friends
    ir.passes.Sequential(
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
        common_passes.RemoveInitializersFromInputsPass(),
        common_passes.ShapeInferencePass(),
    )(model)
    proto = ir.to_proto(model)
    return Graph(proto, count_fused_attention(proto))


class _PackedQkvAttention(pattern.RewriteRuleClassBase):
    """MultiHeadAttention(Split(x @ W_qkv + b)) → Attention(x, W_qkv, b): one kernel, one GEMM.

    W_qkv (D, 3D) holds q | k | v side by side, exactly Attention's packed weight layout.
    """

    def pattern(self, op, x, weight, bias):
        q, k, v = op.Split(op.Add(op.MatMul(x, weight), bias), _outputs=3)
        return op.MultiHeadAttention(
            q, k, v, _domain=MS_DOMAIN, _allow_other_attributes=True, _outputs=["out"]
        )

    def check(self, context, x, weight, bias, out, **_) -> bool:
        split = out.producer().inputs[0].producer()
        w, b = weight.const_value, bias.const_value
        return (
            len(out.producer().inputs) == 3  # no mask, bias or past
            and w is not None
            and b is not None
            and len(w.shape) == 2
            and w.shape[1] == 3 * w.shape[0] == b.shape[0]
            and split.attributes.get_int("axis", 0) in (-1, 2)
            and len(split.inputs) == 1  # equal thirds
        )

    def rewrite(self, op, x, weight, bias, out, **_):
        attributes = {"num_heads": out.producer().attributes.get_int("num_heads")}
        if (scale := out.producer().attributes.get_float("scale")) is not None:
            attributes["scale"] = scale
        return op.Attention(x, weight, bias, _domain=MS_DOMAIN, **attributes)


def count_fused_attention(proto: onnx.ModelProto) -> int:
    return sum(
        1 for n in proto.graph.node if n.domain == MS_DOMAIN and n.op_type in FUSED_ATTENTION_OPS
    )


def to_fp16(graph: Graph) -> Graph:
    """Weights and compute in float16; pixels in and every output stay float32.

    float16 is the CUDA provider's precision, so this graph also gets SkipLayerNormalization: on the
    GPU one kernel instead of Add, Add, LayerNormalization saves two passes over the activations.
    """
    model = ir.from_proto(graph.proto)
    fuse_skip_layer_normalization(model)
    half = ir.from_proto(convert_float_to_float16(ir.to_proto(model), keep_io_types=True))
    half.graph.sort()  # the converter appends its input Casts after their consumers
    proto = ir.to_proto(half)
    return Graph(proto, count_fused_attention(proto))
