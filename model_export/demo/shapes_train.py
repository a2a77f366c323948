"""The demo model, from nothing, following the paper's two stages on synthetic shapes.

    python -m model_export.demo.shapes_train --out checkpoints/demo        (make demo)

Pre-training is a curriculum at low resolution, fine-tuning the paper's:
1. geometry: the hybrid ViT (ResNet stem + encoder) from scratch at 64 px (4×4 tokens of 16×16
   pixels) on classic light-on-dark shapes (AdamW);
2. appearance: at 96 px (6×6, position embeddings interpolated) on free-appearance shapes, lighter,
   darker or hue-only, with channel remaps and polarity flips on the fly (augment.recolour);
3. fine-tune at 224 px (14×14 tokens + [CLS] = 197) with a fresh zero-initialised head and
   bicubically interpolated position embeddings (SGD + momentum, cosine, clip at 1);
4. score top-1 on three freshly drawn test sets with seeds no stage saw: free appearance, the
   classic light-on-dark distribution, and the hue-only slice (see shapes.py);
5. write the native checkpoint (labels = the six shape names, in head order) and summary.json.

Geometry comes first because a small ViT facing free polarity from the start stays at chance for
tens of thousands of images; once it knows the outlines, appearance is learned quickly. Images are
drawn once per stage and varied by cheap tensor augmentation. Every stage goes through train.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from model_export.demo.shapes import CLASSES, generate
from model_export.formats.checkpoints import NATIVE_WEIGHTS, load_checkpoint, save_native
from model_export.model.vit import ViT, count_parameters
from model_export.training.data import ImageDataset, ImageFolder, scan, split
from model_export.training.recipe import (
    TrainConfig,
    evaluate,
    prepare_for_finetune,
    scratch_model,
    stage_summary,
    train,
    write_summary,
)


@dataclass(frozen=True)
class Stage:
    size: int  # training resolution; position embeddings are interpolated when it changes
    appearance: str  # shapes.APPEARANCES
    per_class: int  # images drawn per class (augmentation varies them further)
    seed: int  # drawing seed: every stage and test set has its own, so all are disjoint
    train: TrainConfig
    fresh_head: bool = False  # the paper's fine-tuning start: a new zero-initialised head


def _adamw(steps: int, recolour: float) -> TrainConfig:
    """From scratch, Adam-family as in the paper's pre-training."""
    return TrainConfig(
        steps=steps,
        batch_size=64,
        micro_batch=64,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        warmup_steps=100,
        augment="dihedral",  # the shape classes do not change under flips or quarter turns
        recolour=recolour,
        eval_every=500,
    )


@dataclass(frozen=True)
class Recipe:
    # A few-MB model: 4 blocks of D=128 (dim 96-192 / depth 4-6 is the demo's size budget) on the
    # paper's hybrid at its smallest: a ResNet stem (conv 7×7/2, GroupNorm, max-pool/2: 64
    # channels at stride 4) read in 4×4 patches, so a token is still 16×16 pixels (14×14 + [CLS]
    # at 224). The stem's overlapping convolutions see edges in any colour from the first step; the
    # pure ViT (backbone=None, patch 16) learned outlines several times slower
    # (docs/models/shapes.md, History).
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_dim: int = 512  # 4·D, as in every paper preset
    patch_size: int = 4  # on the backbone's feature map (stride 4), or on the image without one
    backbone: tuple[int, ...] | None = ()  # (): the ResNet stem alone; None: the pure ViT
    stages: tuple[Stage, ...] = field(
        default_factory=lambda: (
            Stage(64, "classic", 1500, seed=0, train=_adamw(1500, recolour=0.0)),
            Stage(96, "free", 3000, seed=1, train=_adamw(2400, recolour=0.5)),
            Stage(
                224,
                "free",
                400,
                seed=5,
                fresh_head=True,
                train=TrainConfig(
                    steps=120,
                    batch_size=64,
                    micro_batch=64,
                    optimizer="sgd",  # the paper's fine-tuning: SGD, momentum 0.9, no decay
                    lr=0.01,
                    warmup_steps=12,
                    augment="dihedral",
                    recolour=0.3,
                    eval_every=60,
                ),
            ),
        )
    )
    test_per_class: int = 200  # 1,200 test images per set
    test_seeds: tuple[tuple[str, int], ...] = (("free", 3), ("classic", 2), ("hue", 4))
    val_fraction: float = 0.05


def run(recipe: Recipe, out: Path, work: Path, workers: int = 0) -> dict[str, Any]:
    """Every stage and the tests; writes out/ and returns the summary written there."""
    started = time.perf_counter()
    model: ViT | None = None
    stages = []
    for k, stage in enumerate(recipe.stages):
        model = _prepare(model, recipe, stage)
        folder = work / f"stage{k + 1}"
        images = _draw(folder, stage.per_class, stage.seed, stage.size, stage.appearance)
        cfg = replace(stage.train, workers=workers)
        stages.append({"stage": asdict(stage), **_train_stage(model, images, cfg, recipe)})
    assert model is not None, "a recipe has at least one stage"
    save_native(model, out)
    summary = {
        "tests": test(model, recipe, work, workers),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "parameters": count_parameters(model),
        "checkpoint_bytes": (out / NATIVE_WEIGHTS).stat().st_size,
        "command": shlex.join(["python", "-m", "model_export.demo.shapes_train", *sys.argv[1:]]),
        "stages": stages,
        "model": model.config.to_dict(),
    }
    write_summary(out, summary)
    return summary


def test(model: ViT, recipe: Recipe, work: Path, workers: int = 0) -> dict[str, Any]:
    """Top-1 on each freshly drawn test set, per class too."""
    results = {}
    for appearance, seed in recipe.test_seeds:
        folder = work / f"test-{appearance}"
        images = _draw(folder, recipe.test_per_class, seed, model.config.image_size, appearance)
        scores = evaluate(model, ImageDataset(images.samples, model.config), 64, workers)
        results[appearance] = {
            "accuracy": scores.accuracy,
            "images": scores.images,
            "per_class": scores.per_class,
            "seed": seed,
        }
        tqdm.write(f"test {appearance}: top-1 {scores.accuracy:.4f}", file=sys.stderr)
    return results


def _prepare(model: ViT | None, recipe: Recipe, stage: Stage) -> ViT:
    """A scratch model for the first stage; later ones resize the grid (and maybe the head)."""
    if model is None:
        dims = dict(dim=recipe.dim, depth=recipe.depth, heads=recipe.heads, mlp_dim=recipe.mlp_dim)
        size = dict(image_size=stage.size, patch_size=recipe.patch_size, backbone=recipe.backbone)
        model = scratch_model("vit-ti16", CLASSES, stage.train.seed, **dims, **size)
        return prepare_for_finetune(model, CLASSES)  # a zero head, as the paper's code starts too
    if stage.fresh_head:
        return prepare_for_finetune(model, CLASSES, image_size=stage.size)
    if stage.size != model.config.image_size:
        model.resize_grid(stage.size)  # (1, 1+g², D) → (1, 1+g'², D), the head kept
    return model


def _train_stage(
    model: ViT, images: ImageFolder, cfg: TrainConfig, recipe: Recipe
) -> dict[str, Any]:
    train_samples, val_samples = split(images.samples, recipe.val_fraction, cfg.seed)
    train_set = ImageDataset(train_samples, model.config)
    val_set = ImageDataset(val_samples, model.config)
    result = train(model, train_set, cfg, val_set)
    scores = evaluate(model, val_set, cfg.micro_batch, cfg.workers)
    tqdm.write(f"{model.config.image_size} px: val accuracy {scores.accuracy:.4f}")
    return stage_summary(cfg, result, scores, len(train_samples))


def _draw(folder: Path, per_class: int, seed: int, size: int, stage: Stage | str) -> ImageFolder:
    """Draw one image set into folder and index it in head order (CLASSES, not sorted names)."""
    appearance = stage if isinstance(stage, str) else stage.appearance
    with tqdm(total=per_class * len(CLASSES), desc=f"draw {folder.name}", unit="img") as bar:
        generate(folder, per_class, seed, size, progress=bar.update, appearance=appearance)
    return scan(folder, classes=CLASSES)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m model_export.demo.shapes_train",
        description="Train the shapes demo ViT from nothing.",
    )
    p.add_argument("--out", type=Path, default=Path("checkpoints/demo"))
    p.add_argument(
        "--evaluate",
        type=Path,
        metavar="CHECKPOINT",
        help="train nothing: score this checkpoint on the three test sets and print the scores",
    )
    p.add_argument("--work", type=Path, help="keep the drawn images here (new or empty folder)")
    p.add_argument("--steps", type=int, nargs="+", help="steps per stage (short trial runs)")
    p.add_argument("--per-class", type=int, nargs="+", help="images per class, per stage (trials)")
    p.add_argument("--test-per-class", type=int, help="test images per class and set (trials)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding processes")
    p.add_argument(
        "--pure", action="store_true", help="the pure ViT (16×16 image patches), not the hybrid"
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: every core; 1 is faster when other jobs share the CPU)",
    )
    args = p.parse_args(argv)
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        p.error(f"--work {args.work} is not empty; give a new or empty folder")
    recipe = Recipe(backbone=None, patch_size=16) if args.pure else Recipe()
    stages = list(recipe.stages)
    for option, values in (("--steps", args.steps), ("--per-class", args.per_class)):
        if values is not None and (len(values) != len(stages) or min(values) < 1):
            p.error(f"{option} takes {len(stages)} positive numbers, one per stage")
    for k, n in enumerate(args.steps or ()):
        stages[k] = replace(stages[k], train=replace(stages[k].train, steps=n))
    for k, n in enumerate(args.per_class or ()):
        stages[k] = replace(stages[k], per_class=n)
    recipe = replace(recipe, stages=tuple(stages))
    if args.test_per_class:
        recipe = replace(recipe, test_per_class=args.test_per_class)
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    with tempfile.TemporaryDirectory(prefix="vit-demo-") as scratch:
        work = args.work or Path(scratch)
        if args.evaluate:
            scores = test(load_checkpoint(args.evaluate).model, recipe, work, args.workers)
            print(json.dumps(scores, indent=2))
            return
        summary = run(recipe, args.out, work, args.workers)
    scores = ", ".join(f"{k} {t['accuracy']:.4f}" for k, t in summary["tests"].items())
    print(
        f"test top-1: {scores} ({recipe.test_per_class * len(CLASSES)} new images each); "
        f"{summary['parameters']:,} parameters, {summary['checkpoint_bytes'] / 1e6:.1f} MB, "
        f"{summary['wall_seconds']:.0f} s; checkpoint in {args.out}"
    )


if __name__ == "__main__":
    main()
