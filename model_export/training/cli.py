"""`vit-train`: fine-tune a ViT on an image folder with the paper's recipe; the loop is train.py.

    vit-train data/shapes --checkpoint checkpoints/demo --image-size 224 --out runs/ft
    vit-train data/shapes --from-scratch --preset vit-ti16 --optimizer adamw --lr 1e-3 --out runs/s

The result is a native checkpoint folder (model.safetensors, config.json, labels.json) plus
summary.json: validation accuracy, steps, time, images seen, skipped images, the full config and
the checkpoint's format as it was read. Bad options are one line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, get_args

import torch

from model_export.cli_args import GRID_HELP, grid_arg, image_size_arg
from model_export.formats.checkpoints import FORMATS, CheckpointError, load_checkpoint
from model_export.model.presets import HYBRID_PRESETS, PRESETS
from model_export.model.vit import DEFAULT_POS_EMBED_RESIZE, PosEmbedResize, ViT
from model_export.training.data import AUGMENTS, DataError, ImageDataset, scan, split
from model_export.training.recipe import (
    Optimizer,
    TrainConfig,
    TrainError,
    evaluate,
    make_summary,
    prepare_for_finetune,
    scratch_model,
    train,
    write_checkpoint,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="vit-train",
        description="Fine-tune a ViT on an image folder (root/<class>/<image>) "
        "with the paper's recipe.",
    )
    p.add_argument("data", type=Path, help="training image folder, one sub-folder per class")
    p.add_argument("--out", type=Path, required=True, help="folder for the checkpoint + summary")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--checkpoint", type=Path, help="pre-trained checkpoint to fine-tune")
    start.add_argument("--from-scratch", action="store_true", help="random init (see --preset)")
    p.add_argument("--format", default="auto", choices=FORMATS, help="checkpoint format")
    p.add_argument(
        "--preset",
        default="vit-ti16",
        choices=sorted([*PRESETS, *HYBRID_PRESETS]),
        metavar="NAME",
        help="with --from-scratch: vit-{ti,s,b,l,h}{14,16,32}, or a hybrid: "
        f"{', '.join(HYBRID_PRESETS)} (default: vit-ti16)",
    )
    for dim in ("dim", "depth", "mlp-dim", "patch-size"):
        p.add_argument(f"--{dim}", type=int, help=f"with --from-scratch: override the {dim}")
    p.add_argument("--heads", type=int, help="scratch: override; timm file of odd width: give it")
    p.add_argument("--grid", type=grid_arg, metavar="RxC", help=GRID_HELP)
    p.add_argument(
        "--image-size",
        type=image_size_arg,
        metavar="S|HxW",
        help="train at this resolution, e.g. 384 or 384x512 (default: the model's)",
    )
    p.add_argument(
        "--pos-embed-resize",
        choices=get_args(PosEmbedResize),
        help="how position embeddings are interpolated to a new grid (default: the way the "
        f"checkpoint's own family does, e.g. DINOv2's; {DEFAULT_POS_EMBED_RESIZE} for a preset)",
    )
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val-dir", type=Path, help="separate validation folder, same classes")
    val.add_argument("--val-fraction", type=float, default=0.1, help="seeded per-class split")
    d = TrainConfig()
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step")
    p.add_argument("--micro-batch", type=int, default=d.micro_batch, help="images per pass")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--optimizer", choices=get_args(Optimizer), default=d.optimizer)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--clip-norm", type=float, default=d.clip_norm, help="global gradient norm")
    p.add_argument("--augment", choices=AUGMENTS, default=d.augment)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="0: only at the end")
    p.add_argument("--workers", type=int, default=d.workers, help="image-decoding processes")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: every core; 1 is faster when other jobs share the CPU)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def train_config(args: argparse.Namespace) -> TrainConfig:
    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def build(args: argparse.Namespace, labels: tuple[str, ...]) -> tuple[ViT, dict[str, str]]:
    """The starting model the arguments describe, ready for the labels, and where it came from."""
    if args.from_scratch:
        names = ("dim", "depth", "heads", "mlp_dim", "patch_size", "image_size")
        overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
        try:
            model = scratch_model(args.preset, labels, args.seed, **overrides)
        except ValueError as e:  # ViTConfig names the inconsistent sizes
            raise TrainError(str(e)) from e
        return prepare_for_finetune(model, labels), {"from_scratch": args.preset}
    loaded = load_checkpoint(args.checkpoint, format=args.format, heads=args.heads, grid=args.grid)
    model = prepare_for_finetune(loaded.model, labels, args.image_size, args.pos_embed_resize)
    return model, {"checkpoint": str(args.checkpoint), "format": loaded.format}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Everything main does, returning the summary it writes."""
    cfg = train_config(args)
    if args.out.exists() and not args.out.is_dir():
        raise TrainError(f"--out {args.out} exists and is not a folder")
    if args.threads is not None and args.threads < 1:
        raise TrainError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    folder = scan(args.data)
    model, source = build(args, folder.classes)
    if args.val_dir is not None:
        val_folder = scan(args.val_dir, classes=folder.classes)
        train_samples, val_samples = list(folder.samples), list(val_folder.samples)
        skipped = folder.skipped + val_folder.skipped
    else:
        train_samples, val_samples = split(folder.samples, args.val_fraction, args.seed)
        skipped = folder.skipped
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        print(f"vit-train: skipped {len(skipped)} unreadable image(s): {shown}", file=sys.stderr)
    train_set = ImageDataset(train_samples, model.config)
    val_set = ImageDataset(val_samples, model.config)
    result = train(model, train_set, cfg, val_set, args.device, progress=not args.quiet)
    final = evaluate(model, val_set, cfg.micro_batch, cfg.workers, args.device)
    summary = make_summary(model, cfg, result, final, source, len(train_samples), skipped)
    write_checkpoint(model, args.out, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        summary = run(args)
    except (TrainError, DataError, CheckpointError) as e:
        print(f"vit-train: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"val accuracy {summary['val_accuracy']:.4f} on {summary['val_images']} images after "
        f"{summary['steps']} steps ({summary['seconds']:.0f} s); checkpoint in {args.out}"
    )


if __name__ == "__main__":
    main()
