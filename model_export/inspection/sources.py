"""What vit-inspect reads from a model: weights to draw, and a function that explains a batch.

    open_model(path) -> Inspectable      a bundle folder (model.json) or any checkpoint

A checkpoint is read with PyTorch; a bundle, which has no torch weights, from its explain graph:
the patch filters and position embeddings are that graph's initializers, and the attention
distance and rollout are its outputs, run on ONNX Runtime. Both paths preprocess images with the
service's transform (vit_core/images.py), configured from the model's own preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from model_export.export.graphs import ExplainGraph
from model_export.formats import checkpoints
from model_export.model.attention_distance import Layout, token_layout
from model_export.preprocessing import TRAINING_MAX_PIXELS, preprocessor
from vit_core.bundle import (
    ATTENTION_DISTANCE,
    EXPLAIN,
    INPUT,
    MANIFEST,
    ROLLOUT,
    load_bundle,
)
from vit_core.images import Preprocessor

HYBRID_NO_FILTERS = (
    "hybrid model: patches are embedded from the ResNet backbone's feature maps, not from RGB "
    "pixels, so there are no RGB patch-embedding filters to show"
)
_NO_BUNDLE_FILTERS = (
    "the explain graph holds no ({d}, 3, {p}, {p}) patch-embedding filter (a hybrid model, whose "
    "patches come from a ResNet backbone's feature maps?)"
)


_POSITIONED_PREFIXES = (1, 2, 0)  # tokens with a position before the patches: [CLS] (, [DIST])

# pixels (B, ...) as the graph takes them → attention distance (B, L, H) in pixels, rollout (B, N)
Explain = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class InspectError(ValueError):
    """The model or the images cannot be inspected; the message says why in one line."""


@dataclass(frozen=True)
class Inspectable:
    kind: str  # "checkpoint" | "bundle"
    image_size: int | tuple[int, int]  # S, or (H, W)
    layout: Layout  # (rows, cols) of patch tokens, input pixels per token side
    depth: int  # L
    heads: int  # H
    preprocessor: Preprocessor
    pos_embed: np.ndarray  # (N, D): the patch positions only, [CLS] (and [DIST]) left out
    filters: np.ndarray | None  # (D, 3, P, P) patch-embedding filters, None when there are none
    no_filters: str  # why filters is None ("" when it is not)
    explain: Explain


def open_model(path: Path, grid: tuple[int, int] | None = None) -> Inspectable:
    """A bundle when path holds a model.json, otherwise a checkpoint of any supported format
    (grid: the token grid of one whose file does not record it)."""
    if not path.exists():
        raise InspectError(f"{path}: no such file or folder")
    return from_bundle(path) if (path / MANIFEST).is_file() else from_checkpoint(path, grid)


def from_checkpoint(path: Path, grid: tuple[int, int] | None = None) -> Inspectable:
    model = checkpoints.load_checkpoint(path, grid=grid).model  # CheckpointError names problems
    config = model.config
    layout = token_layout(config)
    hybrid = config.backbone is not None  # () is a hybrid too: stem only
    graph = ExplainGraph(model).eval()  # the very module the bundle's explain graph is made from

    @torch.no_grad()
    def explain(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = dict(zip(graph.outputs, graph(torch.from_numpy(pixels)), strict=True))
        return out[ATTENTION_DISTANCE].numpy(), out[ROLLOUT].numpy()  # (B, L, H), (B, N)

    return Inspectable(
        kind="checkpoint",
        image_size=config.image_size,
        layout=layout,
        depth=config.depth,
        heads=config.heads,
        preprocessor=preprocessor(config),
        pos_embed=model.pos_embed.detach()[0, config.pos_tokens :].numpy(),  # the patches
        filters=None if hybrid else model.patch_embed.proj.weight.detach().numpy(),  # (D, 3, P, P)
        no_filters=HYBRID_NO_FILTERS if hybrid else "",
        explain=explain,
    )


def from_bundle(path: Path) -> Inspectable:
    manifest = load_bundle(path)  # BundleError names the problem
    if EXPLAIN not in manifest.graphs:
        raise InspectError(
            f"{path}: the bundle has no explain graph; re-export it with vit-export to inspect it"
        )
    graph_file = path / manifest.graphs[EXPLAIN].file
    session = ort.InferenceSession(graph_file, providers=_providers())
    if ATTENTION_DISTANCE not in {o.name for o in session.get_outputs()}:
        raise InspectError(
            f"{path}: the explain graph has no {ATTENTION_DISTANCE} output (exported by an older "
            "vit-export); re-export the bundle from its checkpoint with vit-export"
        )
    initializers = onnx.load(graph_file).graph.initializer
    d, p, n = manifest.dim, manifest.patch_size, manifest.num_patches
    # Rows for [CLS], for DeiT's [DIST] too, or none (SigLIP) before the patches' N.
    found = [(k, _initializer(initializers, (1, k + n, d))) for k in _POSITIONED_PREFIXES]
    prefix, pos_embed = next(((k, pos) for k, pos in found if pos is not None), (0, None))
    if pos_embed is None:
        raise InspectError(f"{graph_file}: no (1, {1 + n}, {d}) position-embedding initializer")
    filters = _initializer(initializers, (d, 3, p, p))

    def explain(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        distance, rollout = session.run([ATTENTION_DISTANCE, ROLLOUT], {INPUT: pixels})
        return distance, rollout

    return Inspectable(
        kind="bundle",
        image_size=manifest.image_size,
        layout=(*manifest.grid, manifest.stride),
        depth=manifest.depth,
        heads=manifest.heads,
        preprocessor=Preprocessor(
            manifest.preprocess, manifest.image_size, TRAINING_MAX_PIXELS, manifest.pixels
        ),  # local files the user chose, read as training reads them, as the graph takes them
        pos_embed=pos_embed[0, prefix:],
        filters=filters,
        no_filters="" if filters is not None else _NO_BUNDLE_FILTERS.format(d=d, p=p),
        explain=explain,
    )


def _initializer(
    initializers: Iterable[onnx.TensorProto], shape: tuple[int, ...]
) -> np.ndarray | None:
    """The one initializer of this shape as float32, found by shape so that it does not depend on
    how the exporter named it; None when there is none. Two would be ambiguous: an error."""
    found = [t for t in initializers if tuple(t.dims) == shape]
    if len(found) > 1:
        names = ", ".join(t.name for t in found)
        raise InspectError(f"several initializers of shape {shape} ({names}); cannot tell which")
    return numpy_helper.to_array(found[0]).astype(np.float32) if found else None


def _providers() -> list[str]:
    """CUDA when this ONNX Runtime has it (an fp16 bundle is slow on CPU), else the CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
