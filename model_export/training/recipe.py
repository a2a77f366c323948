"""Fine-tuning with the paper's recipe (Appendix B.1.1): the loop; `vit-train` is train_cli.py.

From a checkpoint: drop the pre-trained head and pre-logits, attach a zero-initialised D×K head
for the new classes, optionally move to a higher resolution by interpolating the position
embeddings once at load (prepare_for_finetune). Then SGD with momentum 0.9, no weight decay,
linear warm-up into cosine decay, gradient clipping at global norm 1, a large batch reached by
gradient accumulation (train). Or a randomly initialised preset (scratch_model), how the demo
model starts. evaluate gives top-1 and loss; make_summary/write_checkpoint record a run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from model_export.formats.checkpoints import save_native
from model_export.model.presets import preset
from model_export.model.vit import PosEmbedResize, ViT, count_parameters
from model_export.training.augment import recolour, shift
from model_export.training.data import Augment, Samples, augment, eval_batches, train_batches

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
    shift: int = 0  # random translation by up to this many pixels (augment.shift); 0: none
    recolour: float = 0.0  # share of images with remapped, permuted channels (augment.recolour)
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
        if min(self.warmup_steps, self.eval_every, self.workers, self.shift) < 0:
            problems.append("warm-up, eval-every, workers and shift cannot be negative")
        if self.weight_decay < 0 or not 0 <= self.recolour <= 1:
            problems.append("weight decay cannot be negative, recolour must be in [0, 1]")
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
    image_size: int | tuple[int, int] | None = None,
    pos_embed_resize: PosEmbedResize | None = None,
) -> ViT:
    """The paper's fine-tuning start: a zero-initialised E×K head for labels on the published
    embedding (the [CLS] token, DeiT's token mean, SigLIP's pooled, CLIP's normalised projection);
    position embeddings resized once.

    image_size: S or (H, W); for a hybrid the grid is over its backbone's feature map.
    pos_embed_resize: None resizes the way the model's family does (config.pos_embed_resize).
    """
    c = model.config
    sides = (image_size,) * 2 if isinstance(image_size, int) else image_size or ()
    if any(side % c.stride for side in sides):
        unit = f"patch size {c.patch_size}"
        if c.backbone is not None:
            unit = f"token stride {c.stride} (backbone stride {c.stride // c.patch_size} × {unit})"
        raise TrainError(f"--image-size {_size_text(image_size)} is not a multiple of the {unit}")
    model.reset_head(len(labels), labels)
    if image_size is not None and image_size != c.image_size:
        model.resize_grid(image_size, pos_embed_resize)  # (1, 1+r·c, D) → (1, 1+r'·c', D)
    return model


def _size_text(image_size: int | tuple[int, int] | None) -> str:
    return "x".join(map(str, image_size)) if isinstance(image_size, tuple) else str(image_size)


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
    train_set: Samples,
    cfg: TrainConfig,
    val_set: Samples | None = None,
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
            x = shift(x, cfg.shift, augment_rng)
            x = recolour(x, cfg.recolour, model.config.mean, model.config.std, augment_rng)
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
    model: ViT, dataset: Samples, batch: int = 64, workers: int = 0, device: str = "cpu"
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


# --- summary ----------------------------------------------------------------------------------


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


def stage_summary(
    cfg: TrainConfig, result: TrainResult, val: Evaluation, train_images: int
) -> dict[str, Any]:
    """One stage of a multi-stage recipe (the demos): what it trained on, how long, how well."""
    return {
        "val_accuracy": val.accuracy,
        "val_images": val.images,
        "train_images": train_images,
        "steps": result.steps,
        "images_seen": result.images_seen,
        "seconds": round(result.seconds, 1),
        "images_per_second": round(result.images_per_second, 1),
        "final_train_loss": result.final_loss,
        "evaluations": result.evaluations,
        "config": asdict(cfg),
    }


def write_checkpoint(model: ViT, out: Path, summary: dict[str, Any]) -> None:
    """The native checkpoint folder plus summary.json next to it."""
    save_native(model.cpu(), out)
    write_summary(out, summary)


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
