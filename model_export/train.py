"""`vit-train`: fine-tune a ViT on an image folder with the paper's recipe (Appendix B.1.1).

From a checkpoint: drop the pre-trained head and pre-logits, attach a zero-initialised D×K head
for the new classes, optionally move to a higher resolution by interpolating the position
embeddings once at load. Then SGD with momentum 0.9, no weight decay, linear warm-up into cosine
decay, gradient clipping at global norm 1, a large batch reached by gradient accumulation. Or
--from-scratch for a randomly initialised preset (how the demo model starts).

    vit-train data/shapes --checkpoint checkpoints/demo --image-size 224 --out runs/ft
    vit-train data/shapes --from-scratch --preset vit-ti16 --optimizer adamw --lr 1e-3 --out runs/s

The result is a native checkpoint folder (model.safetensors, config.json, labels.json) plus
summary.json: validation accuracy, steps, time, images seen, skipped images and the full config.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from model_export.checkpoints import FORMATS, CheckpointError, load_checkpoint, save_native
from model_export.data import (
    AUGMENTS,
    Augment,
    DataError,
    ImageDataset,
    augment,
    eval_batches,
    scan,
    split,
    train_batches,
)
from model_export.model import (
    DEFAULT_POS_EMBED_RESIZE,
    PRESETS,
    PosEmbedResize,
    ViT,
    count_parameters,
    preset,
)

Optimizer = Literal["sgd", "adamw"]
SUMMARY = "summary.json"


class TrainError(ValueError):
    """A training request that cannot run; the message says which option is wrong and why."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 500  # optimiser steps; the paper fine-tunes small data sets for 500
    batch_size: int = 512  # images per optimiser step (the paper's fine-tuning batch)
    micro_batch: int = 32  # images per forward/backward; gradients accumulate up to batch_size
    lr: float = 0.01  # peak learning rate; the paper sweeps {0.001, 0.003, 0.01, 0.03} with SGD
    optimizer: Optimizer = "sgd"  # the paper fine-tunes with SGD; adamw suits training from scratch
    momentum: float = 0.9  # SGD momentum (paper)
    weight_decay: float = 0.0  # the paper fine-tunes without weight decay
    warmup_steps: int = 50  # linear warm-up from 0, then cosine decay to 0 at the last step
    clip_norm: float = 1.0  # clip gradients at this global norm (paper)
    augment: Augment = "flip"  # flip is safe for photos; dihedral when orientation is no cue
    seed: int = 0  # data order and augmentation; the same seed gives the same weights
    eval_every: int = 0  # validate every N steps as well as at the end; 0: only at the end
    workers: int = 0  # DataLoader processes decoding images; 0 decodes in the training process

    def __post_init__(self) -> None:
        problems = []
        if min(self.steps, self.batch_size, self.micro_batch) < 1:
            problems.append("steps, batch size and micro-batch must be positive")
        elif self.batch_size % self.micro_batch:
            problems.append(
                f"batch size {self.batch_size} is not a multiple of micro-batch {self.micro_batch}"
            )
        if self.lr <= 0 or self.clip_norm <= 0:
            problems.append("learning rate and clip norm must be positive")
        if min(self.warmup_steps, self.eval_every, self.workers) < 0 or self.weight_decay < 0:
            problems.append("warm-up, eval-every, workers and weight decay cannot be negative")
        if problems:
            raise TrainError("; ".join(problems))


@dataclass(frozen=True)
class Evaluation:
    accuracy: float  # top-1 over all images
    loss: float  # mean cross-entropy
    images: int
    per_class: dict[str, float]  # top-1 per class name


@dataclass(frozen=True)
class TrainResult:
    steps: int
    images_seen: int
    seconds: float  # training only, validation passes excluded
    final_loss: float  # mean training loss of the last step
    evaluations: list[dict[str, Any]]  # {"step", "accuracy", "loss"} for every validation pass

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.seconds if self.seconds else 0.0


# --- model ---------------------------------------------------------------------------------


def scratch_model(name: str, labels: tuple[str, ...], seed: int, **overrides: Any) -> ViT:
    """A randomly initialised preset (overrides: image_size, dim, depth, ...), seeded."""
    torch.manual_seed(seed)
    return ViT(preset(name, num_classes=len(labels), labels=labels, **overrides))


def prepare_for_finetune(
    model: ViT,
    labels: tuple[str, ...],
    image_size: int | None = None,
    pos_embed_resize: PosEmbedResize = DEFAULT_POS_EMBED_RESIZE,
) -> ViT:
    """The paper's fine-tuning start: zero D×K head for labels; position embeddings resized once."""
    if image_size is not None and image_size % model.config.patch_size:
        raise TrainError(
            f"--image-size {image_size} is not a multiple of the patch size "
            f"{model.config.patch_size}"
        )
    model.reset_head(len(labels), labels)
    if image_size is not None and image_size != model.config.image_size:
        model.resize_grid(image_size, pos_embed_resize)  # (1, 1+g², D) → (1, 1+g'², D)
    return model


# --- training ------------------------------------------------------------------------------


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """LR multiplier per step: linear ramp over warmup steps, then half a cosine down to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def make_optimizer(model: ViT, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    # AdamW decays matrices only: biases, LayerNorms and the embeddings stay free (timm, DeiT).
    decay: list[torch.nn.Parameter] = []
    keep: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        matrix = p.ndim >= 2 and name not in ("pos_embed", "cls_token")
        (decay if matrix else keep).append(p)
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": keep},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.0)


def train(
    model: ViT,
    train_set: ImageDataset,
    cfg: TrainConfig,
    val_set: ImageDataset | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Run cfg.steps optimiser steps of cfg.batch_size images each; returns what happened."""
    order_seed, augment_seed = _spawn_seeds(cfg.seed, 2)
    batches = train_batches(train_set, cfg.micro_batch, order_seed, cfg.workers)
    augment_rng = torch.Generator().manual_seed(augment_seed)
    model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    schedule = LambdaLR(optimizer, warmup_cosine(cfg.warmup_steps, cfg.steps))
    accumulate = cfg.batch_size // cfg.micro_batch
    evaluations, seconds, loss = [], 0.0, float("nan")
    bar = tqdm(range(1, cfg.steps + 1), desc="train", unit="step", disable=not progress)
    for step in bar:
        start = time.perf_counter()
        loss, correct = 0.0, 0
        for _ in range(accumulate):
            x, y = next(batches)  # (B, 3, S, S), (B,)
            x = augment(x, cfg.augment, augment_rng)
            micro_loss, micro_correct = _backward(model, x.to(device), y.to(device), accumulate)
            loss += micro_loss / accumulate
            correct += micro_correct
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        seconds += time.perf_counter() - start
        bar.set_postfix(
            loss=f"{loss:.3f}",
            acc=f"{correct / cfg.batch_size:.3f}",
            img_s=f"{step * cfg.batch_size / seconds:.0f}",
        )
        if val_set is not None and cfg.eval_every and step % cfg.eval_every == 0:
            ev = evaluate(model, val_set, cfg.micro_batch, cfg.workers, device)
            evaluations.append({"step": step, "accuracy": ev.accuracy, "loss": ev.loss})
            bar.write(f"step {step}: val accuracy {ev.accuracy:.4f}, loss {ev.loss:.4f}")
            model.train()
    bar.close()
    images = cfg.steps * cfg.batch_size
    return TrainResult(cfg.steps, images, seconds, loss, evaluations)


def _backward(model: ViT, x: torch.Tensor, y: torch.Tensor, accumulate: int) -> tuple[float, int]:
    """Add one micro-batch's share of the step's mean loss gradient; its loss and hits."""
    logits = model(x).logits  # (B, K)
    loss = F.cross_entropy(logits, y)
    (loss / accumulate).backward()  # type: ignore[no-untyped-call]  # sums into .grad: a mean
    return loss.item(), int((logits.argmax(1) == y).sum())


@torch.no_grad()
def evaluate(
    model: ViT, dataset: ImageDataset, batch: int = 64, workers: int = 0, device: str = "cpu"
) -> Evaluation:
    """Top-1 accuracy and mean cross-entropy of model over dataset."""
    model.to(device).eval()
    labels, predictions, loss = [], [], 0.0
    for x, y in eval_batches(dataset, batch, workers):
        logits = model(x.to(device)).logits.cpu()  # (B, K)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        labels.append(y)
        predictions.append(logits.argmax(1))
    truth, guess = torch.cat(labels).numpy(), torch.cat(predictions).numpy()
    names = model.config.labels or tuple(str(k) for k in range(model.config.num_classes))
    per_class = {
        name: float((guess[truth == k] == k).mean())
        for k, name in enumerate(names)
        if (truth == k).any()
    }
    return Evaluation(float((truth == guess).mean()), loss / len(truth), len(truth), per_class)


def _spawn_seeds(seed: int, n: int) -> list[int]:
    """n independent seeds from one: data order and augmentation must not share a stream."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


# --- command line --------------------------------------------------------------------------


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
        choices=sorted(PRESETS),
        metavar="NAME",
        help="with --from-scratch: vit-{ti,s,b,l,h}{14,16,32} (default: vit-ti16)",
    )
    for dim in ("dim", "depth", "mlp-dim", "patch-size"):
        p.add_argument(f"--{dim}", type=int, help=f"with --from-scratch: override the {dim}")
    p.add_argument("--heads", type=int, help="scratch: override; timm file of odd width: give it")
    p.add_argument("--image-size", type=int, help="train at this resolution (default: model's)")
    p.add_argument(
        "--pos-embed-resize",
        default=DEFAULT_POS_EMBED_RESIZE,
        choices=get_args(PosEmbedResize),
        help="how position embeddings are interpolated to a new grid",
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
    loaded = load_checkpoint(args.checkpoint, format=args.format, heads=args.heads)
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


def make_summary(
    model: ViT,
    cfg: TrainConfig,
    result: TrainResult,
    final: Evaluation,
    source: dict[str, Any],
    train_images: int,
    skipped: tuple[Path, ...],
) -> dict[str, Any]:
    return {
        "val_accuracy": final.accuracy,
        "val_loss": final.loss,
        "val_images": final.images,
        "val_per_class": final.per_class,
        "train_images": train_images,
        "skipped_images": len(skipped),
        "skipped": [str(p) for p in skipped],
        "steps": result.steps,
        "images_seen": result.images_seen,
        "seconds": round(result.seconds, 2),
        "images_per_second": round(result.images_per_second, 1),
        "final_train_loss": result.final_loss,
        "evaluations": result.evaluations,
        "parameters": count_parameters(model),
        "source": source,
        "model": model.config.to_dict(),
        "train": asdict(cfg),
    }


def write_checkpoint(model: ViT, out: Path, summary: dict[str, Any]) -> None:
    """The native checkpoint folder plus summary.json next to it."""
    save_native(model.cpu(), out)
    write_summary(out, summary)


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")


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
