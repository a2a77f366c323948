"""The fp16 graphs on the CUDA provider against the fp32 graphs on the CPU, where a GPU answers.

vit-export checks fp16 on ORT's CPU provider (the machine that exports may have no GPU), but fp16
is made for CUDA, whose kernels differ (cuBLAS/cuDNN accumulation, fused attention): this check
runs the graph where it will be served, against the same gates (export_check's FP16_MIN_TOP1 and
FP16_MIN_COSINE), on the exporter's check pictures and noise put through the service's transform.
Without a CUDA session it says why and checks nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnxruntime as ort
from cases import Case, graph_for
from PIL import Image

from model_export.export.check import (
    FP16_MIN_COSINE,
    FP16_MIN_TOP1,
    draw_images,
    noise_images,
)
from model_export.export.exporter import PIXELS
from vit_core.bundle import EMBEDDING, EXPLAIN, FAST, INPUT, LEGACY_PIXELS, LOGITS
from vit_core.images import transform

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
IMAGES = 32  # half pictures, half noise; run at batch 8


def check_fp16_on_cuda(cases: Iterable[Case], provider: str = CUDA) -> list[str]:
    """One line per fast/explain graph: fp16 on the provider (CUDA; another only to try the check
    itself where no GPU is) vs fp32 on the CPU, passed or FAILED."""
    name = provider.removesuffix("ExecutionProvider")
    if provider not in ort.get_available_providers():
        return [f"fp16 parity on {name}: skipped, this onnxruntime has no {provider}"]
    lines = []
    for case in cases:
        if case.graph not in (FAST, EXPLAIN):
            continue
        half = graph_for(case, "fp16")
        assert half is not None  # fast and explain always have an fp16 form
        session = ort.InferenceSession(half.SerializeToString(), providers=[provider])
        if session.get_providers()[0] != provider:
            return [f"fp16 parity on {name}: skipped, the session got {session.get_providers()[0]}"]
        cpu = ort.InferenceSession(case.proto.SerializeToString(), providers=[CPU])
        pixels = _pixels(case, cpu.get_inputs()[0].type)
        got, want = _run(session, pixels), _run(cpu, pixels)
        top1 = float((got[0].argmax(-1) == want[0].argmax(-1)).mean())
        cosine = _min_cosine(got[1], want[1])
        ok = top1 >= FP16_MIN_TOP1 and cosine >= FP16_MIN_COSINE
        lines.append(
            f"fp16 parity on {name}, {case.model} {case.graph}: {'passed' if ok else 'FAILED'}; "
            f"top-1 agreement {top1:.2%} (>= {FP16_MIN_TOP1:.0%}), embedding cosine >= "
            f"{cosine:.6f} (gate {FP16_MIN_COSINE})"
        )
    return lines


def _pixels(case: Case, input_type: str) -> np.ndarray:
    """Pictures and noise through the service's transform, as the graph takes them."""
    side = max(case.image_hw)
    images = draw_images(IMAGES // 2, side) + noise_images(IMAGES // 2, side)
    fmt = PIXELS if input_type == "tensor(uint8)" else LEGACY_PIXELS
    rgb = (Image.fromarray(im) for im in images)
    return np.stack([transform(im, case.preprocess, case.image_hw, fmt)[0] for im in rgb])


def _run(session: ort.InferenceSession, pixels: np.ndarray) -> list[np.ndarray]:
    """(logits, embedding) for all pixels, in batches of 8."""
    chunks = [
        session.run([LOGITS, EMBEDDING], {INPUT: pixels[i : i + 8]})
        for i in range(0, len(pixels), 8)
    ]
    return [np.concatenate([c[j] for c in chunks]) for j in range(2)]


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    dot = (a * b).sum(-1)
    return float((dot / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())
