"""vit-export: checkpoint → bundle (model.json + model.onnx + explain.onnx), checked before written.

The bundle is assembled in a temporary folder next to the destination and moved into place only
after every graph passed onnx.checker and agreed with PyTorch on ONNX Runtime, and model.json read
back through load_bundle. A failed export leaves the destination as it was.
"""

from __future__ import annotations

import argparse
import copy
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from torch import nn

from model_export.cli_args import GRID_HELP, grid_arg, image_size_arg
from model_export.export.check import (
    Checks,
    check_pixels,
    read_check_images,
    reference_input,
    validate,
)
from model_export.export.graphs import (
    ExplainGraph,
    ExportError,
    FastGraph,
    attention_kind,
    export_graph,
    fuse_for_ort,
    to_fp16,
)
from model_export.export.int8 import INT8_GATE, Int8Gate, to_int8
from model_export.export.manifest import backbone_spec, graph_spec, source_sha256, tool_versions
from model_export.export.pixels import with_pixel_input
from model_export.formats import checkpoints
from model_export.formats.checkpoints import CheckpointError
from model_export.model.resnet import fold_weight_standardisation
from model_export.model.vit import ViT
from model_export.preprocessing import bundle_preprocess
from vit_core.bundle import (
    EXPLAIN,
    FAST,
    LOGITS,
    MANIFEST,
    BundleManifest,
    EmbeddingSpec,
    GraphSpec,
    GraphValidation,
    OutputError,
    PixelFormat,
    Precision,
    Role,
    Source,
    load_bundle,
)

GRAPH_FILES = {FAST: "model.onnx", EXPLAIN: "explain.onnx"}
PRECISIONS = ("fp32", "fp16", "int8")
PROTOBUF_LIMIT = 2**31  # one .onnx file holds at most 2 GB; bundles keep weights inside the graph
# uint8 pixels, normalised in the graph. NHWC because PIL decodes to (H, W, 3): the host copies
# each image into its batch row as it is, and the graph's transpose costs less than the host's
# (docs/benchmarks.md, "Graph input layout").
PIXELS = PixelFormat(dtype="uint8", layout="NHWC")


def export_bundle(
    model: ViT,
    out: Path,
    *,
    name: str,
    version: str,
    precision: Precision = "fp32",
    source_format: str = "native",
    source_sha256: str,
    allow_untrained_head: bool = False,
    force: bool = False,
    check_images: list[np.ndarray] | None = None,
    pixels: PixelFormat = PIXELS,
    int8_gate: Int8Gate = INT8_GATE,
) -> BundleManifest:
    """Write a checked bundle for model to out; raise ExportError (nothing written) otherwise.

    check_images: (H, W, 3) uint8 RGB pictures of any size for the parity check; None draws some.
    pixels: what the graphs take; float32 makes the graphs of schema 1, normalised by the host.
    int8_gate: what an int8 export must keep of the float32 model.
    """
    out = Path(out)
    model = model.eval()
    _check_supported(model, precision, allow_untrained_head)
    _check_destination(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{secrets.token_hex(4)}.partial"
    retired = staging.with_suffix(".old")
    staging.mkdir()  # not mkdtemp: its 0700 mode would travel with the bundle
    try:
        source = Source(format=source_format, sha256=source_sha256)
        checks = Checks(precision, check_images, int8_gate)
        manifest = _build(model, staging, name, version, source, checks, pixels)
        manifest.write(staging)
        load_bundle(staging)  # the service's own reader must accept what we wrote
        _check_destination(out, force)
        if out.exists():
            os.replace(out, retired)  # two renames: out is never half old, half new
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
    return manifest


def _build(
    model: ViT,
    folder: Path,
    name: str,
    version: str,
    source: Source,
    checks: Checks,
    pixel_format: PixelFormat,
) -> BundleManifest:
    config, precision = model.config, checks.precision
    model = fold_weight_standardisation(copy.deepcopy(model))  # a hybrid's kernels, as constants
    preprocess = bundle_preprocess(config)
    pixels = check_pixels(config, checks.images, pixel_format)  # (64, H, W, 3) uint8
    reference = reference_input(pixels, pixel_format, preprocess)  # (64, 3, H, W) normalised
    graphs: dict[Role, GraphSpec] = {}
    validation: dict[Role, GraphValidation] = {}
    modules: dict[Role, FastGraph | ExplainGraph] = {
        FAST: FastGraph(model),
        EXPLAIN: ExplainGraph(model),
    }
    for role, module in modules.items():
        outputs = module.outputs  # OUTPUTS[role], and for explain what only vit-inspect reads
        graph = fuse_for_ort(export_graph(module, config.image_hw, outputs))
        if role == FAST and graph.fused_attention < config.depth:
            raise ExportError(
                f"attention fusion found {graph.fused_attention} of {config.depth} blocks; the "
                "fast graph would run unfused attention (an exporter or onnxscript change?)"
            )
        if precision == "fp16":
            graph = to_fp16(graph)
        elif precision == "int8":
            graph = to_int8(graph)
        graph = with_pixel_input(graph, pixel_format, preprocess)
        path = folder / GRAPH_FILES[role]
        onnx.save_model(graph.proto, path)
        _run_checker(path)
        validation[role] = validate(
            graph.proto, module, pixels, outputs, precision, reference, checks.gate
        )
        graphs[role] = graph_spec(graph, path)
    labels = list(config.labels) or [f"class_{i}" for i in range(config.num_classes)]
    return BundleManifest(
        name=name,
        version=version,
        labels=labels,
        image_size=config.image_size,
        patch_size=config.patch_size,
        backbone=backbone_spec(config),
        dim=config.dim,
        depth=config.depth,
        heads=config.heads,
        preprocess=preprocess,
        pixels=pixel_format,
        precision=precision,
        graphs=graphs,
        source=source,
        versions=tool_versions(),
        validation=validation,
        embedding=EmbeddingSpec(
            name=config.embedding_name, dim=config.embed_dim, normalized=config.normalize
        ),
        attention=attention_kind(config),
    )


def _check_supported(model: ViT, precision: str, allow_untrained_head: bool) -> None:
    config = model.config
    if precision not in PRECISIONS:
        raise ExportError(f"unsupported precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if config.channels != 3:
        raise ExportError(f"unsupported configuration: {config.channels} input channels (need 3)")
    size = sum(p.numel() for p in model.parameters()) * 4
    if size >= PROTOBUF_LIMIT:
        raise ExportError(
            f"unsupported configuration: {size / 2**30:.1f} GiB of float32 weights exceed the "
            "2 GiB a single ONNX file can hold"
        )
    head = model.head if isinstance(model.head, nn.Linear) else None  # None: embedding-only
    if head is not None and not allow_untrained_head and not head.weight.detach().any():
        raise ExportError(
            "the classification head's weights are all zero, so every image would get the same "
            "probabilities (an untrained fine-tuning head?); pass --allow-untrained-head to export "
            "it anyway"
        )


def _check_destination(out: Path, force: bool) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise ExportError(f"{out} already exists; pass --force to replace it")
    if not out.is_dir() or out.is_symlink():
        raise ExportError(f"{out} exists and is not a folder; refusing to replace it")
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportError(f"{out} is not a bundle (no {MANIFEST}); refusing to replace it")


def _run_checker(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"onnx.checker rejected {path.name}: {e}") from e


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vit-export",
        description="Export a ViT checkpoint to a checked ONNX bundle for vit-serve.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint file or folder")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to create")
    p.add_argument(
        "--format", choices=checkpoints.FORMATS, default="auto", help="checkpoint format"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp16: float16 weights and compute, for the CUDA provider; int8: dense layers in int8 "
        "(dynamic quantisation), for CPU hosts; inputs, outputs float32 in all",
    )
    p.add_argument(
        "--check-images",
        type=Path,
        help="folder of your own pictures (up to 256) for the self-check, instead of drawn shapes; "
        "what int8 and fp16 must keep top-1 on",
    )
    p.add_argument("--name", help="model name in model.json (default: the checkpoint's name)")
    p.add_argument("--version", default="1", help="model version in model.json")
    p.add_argument(
        "--heads", type=int, help="attention heads, for timm files of a non-standard width"
    )
    p.add_argument("--grid", type=grid_arg, metavar="RxC", help=GRID_HELP)
    p.add_argument(
        "--image-size",
        type=image_size_arg,
        metavar="S|HxW",
        help="serve at this input size: the position embeddings are interpolated the way the "
        "model's own family does (DINOv2's checkpoints cover 518 px and serve at 224)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    p.add_argument(
        "--allow-untrained-head",
        action="store_true",
        help="export even if the classification head is all zeros",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        loaded = checkpoints.load_checkpoint(args.checkpoint, args.format, args.heads, args.grid)
        if args.image_size is not None:
            _resize(loaded.model, args.image_size)
        manifest = export_bundle(
            loaded.model,
            args.out,
            name=args.name or _default_name(args.checkpoint),
            version=args.version,
            precision=args.precision,
            source_format=loaded.format,
            source_sha256=source_sha256(args.checkpoint),
            allow_untrained_head=args.allow_untrained_head,
            force=args.force,
            check_images=read_check_images(args.check_images) if args.check_images else None,
        )
    except (CheckpointError, ExportError, OSError) as e:
        print(f"vit-export: error: {e}", file=sys.stderr)
        return 2
    print(_summary(args.out, manifest))
    return 0


def _resize(model: ViT, size: int | tuple[int, int]) -> None:
    try:
        model.resize_grid(size)
    except ValueError as e:  # not a multiple of the stride
        raise ExportError(f"--image-size: {e}") from e


def _default_name(checkpoint: Path) -> str:
    path = checkpoint.resolve()
    return path.stem if path.is_file() else path.name  # vit_b16.npz → vit_b16


def _summary(out: Path, m: BundleManifest) -> str:
    classes = f"{len(m.labels)} classes" if m.has_head else "no classification head"
    e = m.embedding
    lines = [
        f"wrote {out}: {m.name} v{m.version}, {m.precision}, {classes}",
        f"  /embed: {e.name}, {e.dim} floats{', L2-normalised' if e.normalized else ''}; "
        f"/attention: {m.attention}",
    ]
    fast = m.graphs[FAST]
    lines.append(f"  {fast.file}: attention fused in {fast.fused_attention} of {m.depth} blocks")
    for role, v in m.validation.items():
        shown = {n: e for n, e in v.outputs.items() if m.has_head or n != LOGITS}  # (B, 0): none
        worst = ", ".join(f"{n} {_error_figure(e)}" for n, e in shown.items())
        top1 = "" if v.top1_agreement is None else f"top-1 agreement {v.top1_agreement:.2%}, "
        lines.append(
            f"  {m.graphs[role].file} vs PyTorch on {v.images} images at batches {v.batch_sizes}: "
            f"max rel error {worst}; {top1}"
            f"embedding cosine >= {v.embedding_cosine_min:.6f}" + _rollout_figure(v)
        )
    return "\n".join(lines)


def _error_figure(e: OutputError) -> str:
    """max rel error, and for fp32 the gate it met and the float32 noise that set it."""
    if e.gate is None or e.float32_noise is None:
        return f"{e.max_rel:.2g}"
    return f"{e.max_rel:.2g} (gate {e.gate:.2g}; PyTorch float32 vs float64 {e.float32_noise:.2g})"


def _rollout_figure(v: GraphValidation) -> str:
    r = v.rollout_correlation_min
    return "" if r is None else f", rollout correlation >= {r:.4f}"


if __name__ == "__main__":
    sys.exit(main())
