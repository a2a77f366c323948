"""The exporter's self-check: ONNX Runtime on the CPU provider against PyTorch, same pixels.

Images are both random noise and pictures (model_export.demo.shapes), because noise alone keeps
every activation in a narrow band that real inputs leave; both go through vit_core's transform with
the bundle's own preprocessing (crop or squash), so the check sees the pixels requests will. ONNX
Runtime gets them as the graph takes them (uint8, normalised in-graph); PyTorch gets the same
pixels normalised in torch by the textbook formula, so the graph's front is checked too. Every image
runs through ORT at batch 32; a prefix also at batches 3 and 1, which exercises the dynamic batch
axis.

Errors are relative: max |ort - torch| / max |torch| per output, over every image. An fp32 graph
must stay within its model's own float32 noise: the same PyTorch module run in float64 on the same
inputs gives the noise, measured the same way (float32 against float64), and the gate is
FP32_NOISE_MULTIPLE times it, never below FP32_MAX_REL. A deep network (a ResNet-50 hybrid) carries
more float32 noise than a small one, and ONNX Runtime's kernels sum in another order than
PyTorch's, so a fixed gate would refuse good exports of deep models; a wrong graph (a dropped
bias, a misread weight) is off by far more than either.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from model_export.demo.shapes import CLASSES, draw_shape
from model_export.export.graphs import ExportError
from model_export.export.int8 import INT8_GATE, Int8Gate
from model_export.model.vit import ViTConfig
from model_export.preprocessing import TRAINING_MAX_PIXELS, array_pixels
from vit_core.bundle import (
    EMBEDDING,
    INPUT,
    LOGITS,
    ROLLOUT,
    GraphValidation,
    OutputError,
    PixelFormat,
    Precision,
    Preprocess,
)
from vit_core.errors import ServiceError
from vit_core.images import decode, image_files

BATCH_SIZES = (1, 3, 32)
SMALL_BATCH_IMAGES = 6  # how many images also run at the small batch sizes
FP32_MAX_REL = 1e-4  # the fp32 gate's floor: an error this small is never refused
FP32_NOISE_MULTIPLE = 8.0  # the gate: this many times PyTorch's own float32-vs-float64 error
FP16_MIN_TOP1 = 0.99
FP16_MIN_COSINE = 0.999
MIN_DRAW_SIZE = 32  # pictures are drawn at least this big, then resized like any input
MAX_CHECK_IMAGES = 256  # a user's own: with as many noise images, (512, 3, 224, 224) is 300 MB


class CheckFailed(ExportError):
    """ORT disagrees with PyTorch beyond the tolerance; the message carries the figures."""


@dataclass(frozen=True)
class Checks:
    """What an export is checked on, and what it must keep of the float32 model."""

    precision: Precision
    images: list[np.ndarray] | None  # None: the exporter draws its own
    gate: Int8Gate


def draw_images(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """count (size, size, 3) uint8 pictures of synthetic shapes, every class in turn."""
    rng = np.random.default_rng(seed)
    size = max(size, MIN_DRAW_SIZE)
    return [np.asarray(draw_shape(CLASSES[i % len(CLASSES)], size, rng)[0]) for i in range(count)]


def noise_images(count: int, size: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return list(rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8))


def read_check_images(folder: Path) -> list[np.ndarray]:
    """(H, W, 3) uint8 RGB arrays of the first MAX_CHECK_IMAGES image files under folder that
    decode (name order, sub-folders included), decoded as the service decodes a request."""
    if not folder.is_dir():
        raise ExportError(f"check images: {folder} is not a folder")
    images = []
    for path in image_files(folder):
        try:
            images.append(np.asarray(decode(path.read_bytes(), TRAINING_MAX_PIXELS)))
        except (OSError, ServiceError):
            continue  # named like an image but not one: the folder is the user's
        if len(images) == MAX_CHECK_IMAGES:
            break
    if not images:
        raise ExportError(f"check images: no image file in {folder} decodes as an image")
    return images


def check_pixels(
    config: ViTConfig, images: Sequence[np.ndarray] | None, pixels: PixelFormat
) -> np.ndarray:
    """Interleaved noise and pictures, 64 in all unless the caller brings its own pictures, as
    the graph takes them: (B, H, W, 3) uint8, or as `pixels` says."""
    side = max(config.image_hw)  # drawn square, then squashed to H×W like any input
    pictures = list(images) if images else draw_images(32, side)
    noise = noise_images(len(pictures), side)
    mixed = [im for pair in zip(noise, pictures, strict=True) for im in pair]
    return array_pixels(mixed, config, pixels)


def reference_input(pixels: np.ndarray, fmt: PixelFormat, p: Preprocess) -> torch.Tensor:
    """The graph's input → (B, 3, H, W) float32 by (x / 255 - mean) / std, in torch."""
    x = torch.from_numpy(pixels)
    if fmt.dtype == "float32":
        return x  # normalised by the host already
    if fmt.layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (p.mean, p.std))
    return (x.float() / 255 - mean) / std


Outputs = dict[str, np.ndarray]  # output name → (B, ...)


@torch.no_grad()
def torch_outputs(
    module: nn.Module, x: torch.Tensor, names: Sequence[str], batch: int = 32
) -> Outputs:
    """The module on normalised x; it returns its outputs in the order `names` lists them (the
    graph's order)."""
    chunks = [module(x[i : i + batch]) for i in range(0, len(x), batch)]
    return {n: torch.cat([c[j] for c in chunks]).cpu().numpy() for j, n in enumerate(names)}


def ort_outputs(
    session: ort.InferenceSession, pixels: np.ndarray, names: Sequence[str], batch: int
) -> Outputs:
    starts = range(0, len(pixels), batch)
    chunks = [session.run(list(names), {INPUT: pixels[i : i + batch]}) for i in starts]
    return {n: np.concatenate([c[j] for c in chunks]) for j, n in enumerate(names)}


def validate(
    proto: onnx.ModelProto,
    module: nn.Module,
    pixels: np.ndarray,
    output_names: Sequence[str],
    precision: Precision,
    reference: torch.Tensor,
    int8_gate: Int8Gate = INT8_GATE,
) -> GraphValidation:
    """Run the graph on ORT's CPU provider at every batch size on `pixels`, and the module on
    `reference` (the same pixels, normalised); raise CheckFailed on drift."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    result = compare(session, module, pixels, output_names, precision, reference)
    enforce(result, precision, int8_gate)
    return result


def compare(
    session: ort.InferenceSession,
    module: nn.Module,
    pixels: np.ndarray,
    output_names: Sequence[str],
    precision: Precision,
    reference: torch.Tensor,
) -> GraphValidation:
    """The figures `validate` gates, for a session on any provider (bench/gpu_steps.py runs the
    graphs on CUDA against the module on the GPU)."""
    expected = torch_outputs(module, reference, output_names)
    noise = float32_noise(module, reference, output_names, expected) if precision == "fp32" else {}
    errors = {name: [0.0, 0.0] for name in output_names}  # worst (abs, rel) over batch sizes
    top1, cosine, rollout = 1.0, 1.0, 1.0
    head = expected[LOGITS].shape[-1] > 0  # a model without a head has logits (B, 0)
    for batch in BATCH_SIZES:
        subset = pixels if batch == max(BATCH_SIZES) else pixels[:SMALL_BATCH_IMAGES]
        got = ort_outputs(session, subset, output_names, batch)
        for name in output_names:
            abs_err, rel_err = relative_error(got[name], expected[name][: len(subset)])
            errors[name] = [max(errors[name][0], abs_err), max(errors[name][1], rel_err)]
        if head:
            top1 = min(top1, _top1_agreement(got[LOGITS], expected[LOGITS]))
        cosine = min(cosine, _min_cosine(got[EMBEDDING], expected[EMBEDDING]))
        if ROLLOUT in output_names:
            rollout = min(rollout, _min_correlation(got[ROLLOUT], expected[ROLLOUT]))
    return GraphValidation(
        batch_sizes=list(BATCH_SIZES),
        images=len(pixels),
        outputs={
            n: OutputError(
                max_abs=e[0],
                max_rel=e[1],
                float32_noise=noise.get(n),
                gate=fp32_gate(noise[n]) if n in noise else None,
            )
            for n, e in errors.items()
        },
        top1_agreement=top1 if head else None,
        embedding_cosine_min=cosine,
        rollout_correlation_min=rollout if ROLLOUT in output_names else None,
    )


def relative_error(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max |got - want|, that over max |want|); (0, 0) for empty outputs (no head's logits)."""
    if want.size == 0:
        return 0.0, 0.0
    abs_err = float(np.abs(got.astype(np.float64) - want).max())
    return abs_err, abs_err / max(float(np.abs(want).max()), 1e-12)


def float32_noise(
    module: nn.Module, reference: torch.Tensor, names: Sequence[str], expected: Outputs
) -> dict[str, float]:
    """Per output, the relative error of PyTorch's float32 outputs (`expected`) against the same
    module in float64 on the same inputs: how far float32 arithmetic alone moves this model."""
    exact = torch_outputs(copy.deepcopy(module).double(), reference.double(), names)
    return {n: relative_error(expected[n], exact[n])[1] for n in names}


def fp32_gate(noise: float) -> float:
    """The largest relative error an fp32 graph may have, given its model's float32 noise."""
    return max(FP32_MAX_REL, FP32_NOISE_MULTIPLE * noise)


def _top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(-1) == b[: len(a)].argmax(-1)).mean())


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    b = b[: len(a)]
    dot = (a * b).sum(-1)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return float((dot / np.maximum(norms, 1e-12)).min())


def _min_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Worst per-row Pearson correlation of a (B, N) with b's first B rows."""
    a, b = a - a.mean(-1, keepdims=True), b[: len(a)] - b[: len(a)].mean(-1, keepdims=True)
    return _min_cosine(a, b)


def enforce(v: GraphValidation, precision: Precision, int8_gate: Int8Gate = INT8_GATE) -> None:
    """CheckFailed, its message carrying the figures, if `v` misses its precision's gate."""
    figures = ", ".join(
        f"{name} max_abs={e.max_abs:.3g} max_rel={e.max_rel:.3g}" for name, e in v.outputs.items()
    )
    if v.top1_agreement is not None:
        figures += f", top1_agreement={v.top1_agreement:.4f}"
    figures += f", cosine_min={v.embedding_cosine_min:.6f}"
    if v.rollout_correlation_min is not None:
        figures += f", rollout_correlation_min={v.rollout_correlation_min:.4f}"
    if precision == "fp32":
        drifted = [
            f"{name} {e.max_rel:.3g} > gate {e.gate:.3g} (= max({FP32_MAX_REL:g}, "
            f"{FP32_NOISE_MULTIPLE:g} × float32 noise {e.float32_noise:.3g}))"
            for name, e in v.outputs.items()
            if e.gate is not None and e.float32_noise is not None and e.max_rel > e.gate
        ]
        if drifted:
            raise CheckFailed(
                f"fp32 graph drifts from PyTorch beyond its gate: {'; '.join(drifted)}; {figures}"
            )
    elif precision == "int8":
        _enforce_int8(v, int8_gate, figures)
    elif _top1(v) < FP16_MIN_TOP1 or v.embedding_cosine_min < FP16_MIN_COSINE:
        raise CheckFailed(
            f"fp16 graph needs top-1 agreement >= {FP16_MIN_TOP1} and embedding cosine >= "
            f"{FP16_MIN_COSINE}: {figures}"
        )


def _enforce_int8(v: GraphValidation, gate: Int8Gate, figures: str) -> None:
    rollout = 1.0 if v.rollout_correlation_min is None else v.rollout_correlation_min
    if (
        _top1(v) < gate.min_top1
        or v.embedding_cosine_min < gate.min_cosine
        or rollout < gate.min_rollout_correlation
    ):
        raise CheckFailed(
            f"int8 graph needs top-1 agreement >= {gate.min_top1}, embedding cosine >= "
            f"{gate.min_cosine} and rollout correlation >= {gate.min_rollout_correlation}: "
            f"{figures}"
        )


def _top1(v: GraphValidation) -> float:
    """Top-1 agreement; a model without a head has no classes to disagree on."""
    return 1.0 if v.top1_agreement is None else v.top1_agreement
