"""The demo model, from nothing, following the paper's two stages on synthetic shapes.

    python -m model_export.demo --out checkpoints/demo        (make demo)

1. draw shapes at the pre-training resolution and pre-train a small ViT from scratch (AdamW);
2. fine-tune at 224 px (patch 16: 196 patches + [CLS] = 197 tokens) with a fresh zero-initialised
   head and bicubically interpolated position embeddings (SGD + momentum, cosine, clip at 1);
3. score top-1 on a freshly drawn test set with a seed neither stage saw;
4. write the native checkpoint (labels = the six shape names, in head order) and summary.json.

Every stage goes through train.py's own functions, so the demo exercises the real trainer.
"""

from __future__ import annotations

import argparse
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

from model_export.checkpoints import NATIVE_WEIGHTS, save_native
from model_export.data import ImageDataset, ImageFolder, scan, split
from model_export.model import ViT, count_parameters
from model_export.shapes import CLASSES, generate
from model_export.train import (
    TrainConfig,
    evaluate,
    prepare_for_finetune,
    scratch_model,
    train,
    write_summary,
)


@dataclass(frozen=True)
class Recipe:
    # A few-MB model: 4 blocks of D=128 (dim 96-192 / depth 4-6 is the demo's size budget).
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_dim: int = 512  # 4·D, as in every paper preset
    patch_size: int = 16
    pretrain_size: int = 112  # 7×7 patches: pre-training is cheap at low resolution (paper §3.2)
    finetune_size: int = 224  # 14×14 patches + [CLS] = 197 tokens
    pretrain_per_class: int = 4000
    finetune_per_class: int = 1000
    test_per_class: int = 200  # 1,200 test images
    val_fraction: float = 0.05
    # Seeds of the three image sets: disjoint, so the test images are new to the model.
    pretrain_seed: int = 0
    finetune_seed: int = 1
    test_seed: int = 2
    pretrain: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=3000,
            batch_size=64,
            micro_batch=64,
            optimizer="adamw",  # from scratch, Adam-family as in the paper's pre-training
            lr=1e-3,
            weight_decay=0.05,
            warmup_steps=100,
            augment="dihedral",  # the shape classes do not change under flips or quarter turns
            eval_every=500,
        )
    )
    finetune: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=300,
            batch_size=64,
            micro_batch=64,
            optimizer="sgd",  # the paper's fine-tuning: SGD, momentum 0.9, no weight decay
            lr=0.01,
            warmup_steps=30,
            augment="dihedral",
            eval_every=100,
        )
    )


def run(recipe: Recipe, out: Path, work: Path, workers: int = 0) -> dict[str, Any]:
    """Both stages and the test; writes out/ and returns the summary written there."""
    started = time.perf_counter()
    model, pretrain_summary = pretrain(recipe, work / "pretrain", workers)
    finetune_summary = finetune(model, recipe, work / "finetune", workers)
    test = _draw(work / "test", recipe.test_per_class, recipe.test_seed, recipe.finetune_size)
    scores = evaluate(model, ImageDataset(test.samples, model.config), 64, workers)
    save_native(model, out)
    summary = {
        "test_accuracy": scores.accuracy,
        "test_images": scores.images,
        "test_per_class": scores.per_class,
        "test_seed": recipe.test_seed,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "parameters": count_parameters(model),
        "checkpoint_bytes": (out / NATIVE_WEIGHTS).stat().st_size,
        "command": shlex.join(["python", "-m", "model_export.demo", *sys.argv[1:]]),
        "pretrain": pretrain_summary,
        "finetune": finetune_summary,
        "recipe": asdict(recipe),
        "model": model.config.to_dict(),
    }
    write_summary(out, summary)
    return summary


def pretrain(recipe: Recipe, work: Path, workers: int) -> tuple[ViT, dict[str, Any]]:
    """Stage 1: a randomly initialised ViT trained at the low resolution."""
    images = _draw(work, recipe.pretrain_per_class, recipe.pretrain_seed, recipe.pretrain_size)
    dims = dict(dim=recipe.dim, depth=recipe.depth, heads=recipe.heads, mlp_dim=recipe.mlp_dim)
    size = dict(image_size=recipe.pretrain_size, patch_size=recipe.patch_size)
    model = scratch_model("vit-ti16", CLASSES, recipe.pretrain.seed, **dims, **size)
    model = prepare_for_finetune(model, CLASSES)  # a zero head, as the paper's code starts too
    return model, _train_stage(model, images, replace(recipe.pretrain, workers=workers), recipe)


def finetune(model: ViT, recipe: Recipe, work: Path, workers: int) -> dict[str, Any]:
    """Stage 2: a fresh zero head, position embeddings 7×7 → 14×14 once, then train at 224 px."""
    prepare_for_finetune(model, CLASSES, image_size=recipe.finetune_size)
    images = _draw(work, recipe.finetune_per_class, recipe.finetune_seed, recipe.finetune_size)
    return _train_stage(model, images, replace(recipe.finetune, workers=workers), recipe)


def _train_stage(
    model: ViT, images: ImageFolder, cfg: TrainConfig, recipe: Recipe
) -> dict[str, Any]:
    train_samples, val_samples = split(images.samples, recipe.val_fraction, cfg.seed)
    train_set = ImageDataset(train_samples, model.config)
    val_set = ImageDataset(val_samples, model.config)
    result = train(model, train_set, cfg, val_set)
    scores = evaluate(model, val_set, cfg.micro_batch, cfg.workers)
    tqdm.write(f"{model.config.image_size} px: val accuracy {scores.accuracy:.4f}")
    return {
        "val_accuracy": scores.accuracy,
        "val_images": scores.images,
        "train_images": len(train_samples),
        "steps": result.steps,
        "images_seen": result.images_seen,
        "seconds": round(result.seconds, 1),
        "images_per_second": round(result.images_per_second, 1),
        "final_train_loss": result.final_loss,
        "evaluations": result.evaluations,
        "config": asdict(cfg),
    }


def _draw(folder: Path, per_class: int, seed: int, size: int) -> ImageFolder:
    """Draw one image set into folder and index it in head order (CLASSES, not sorted names)."""
    with tqdm(total=per_class * len(CLASSES), desc=f"draw {folder.name}", unit="img") as bar:
        generate(folder, per_class, seed, size, progress=bar.update)
    return scan(folder, classes=CLASSES)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m model_export.demo", description="Train the shapes demo ViT from nothing."
    )
    p.add_argument("--out", type=Path, default=Path("checkpoints/demo"))
    p.add_argument("--work", type=Path, help="keep the drawn images here (new or empty folder)")
    p.add_argument("--pretrain-steps", type=int, help="override the recipe (short trial runs)")
    p.add_argument("--finetune-steps", type=int, help="override the recipe (short trial runs)")
    p.add_argument("--workers", type=int, default=1, help="image-decoding processes")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: every core; 1 is faster when other jobs share the CPU)",
    )
    args = p.parse_args(argv)
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        p.error(f"--work {args.work} is not empty; give a new or empty folder")
    recipe = Recipe()
    if args.pretrain_steps:
        recipe = replace(recipe, pretrain=replace(recipe.pretrain, steps=args.pretrain_steps))
    if args.finetune_steps:
        recipe = replace(recipe, finetune=replace(recipe.finetune, steps=args.finetune_steps))
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    with tempfile.TemporaryDirectory(prefix="vit-demo-") as scratch:
        summary = run(recipe, args.out, args.work or Path(scratch), args.workers)
    print(
        f"test top-1 {summary['test_accuracy']:.4f} on {summary['test_images']} new images; "
        f"{summary['parameters']:,} parameters, {summary['checkpoint_bytes'] / 1e6:.1f} MB, "
        f"{summary['wall_seconds']:.0f} s; checkpoint in {args.out}"
    )


if __name__ == "__main__":
    main()
