"""Image-folder data for fine-tuning: root/<class>/<image>, one sub-folder per class.

Class names are the sorted sub-folder names (their order is the head order). Every file is test-
decoded once when the folder is scanned, so an unreadable image is skipped and counted up front
instead of failing a batch an hour into training. Scan and dataset decode and transform through the
service's own code (model_export.preprocessing), configured from the model's ViTConfig: a file is
trained on exactly as it would be served.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from model_export.model.vit import ViTConfig
from model_export.preprocessing import TRAINING_MAX_PIXELS, preprocessor
from vit_core.errors import ServiceError
from vit_core.images import decode, image_files

Sample = tuple[Path, int]  # (image path, class index)
Samples = Dataset[tuple[torch.Tensor, int]]  # what training reads: ((3, S, S) pixels, class index)
Augment = Literal["none", "flip", "dihedral"]
AUGMENTS: tuple[Augment, ...] = ("none", "flip", "dihedral")


class DataError(ValueError):
    """A data folder that cannot be trained on; the message names the folder and the problem."""


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]  # readable images only, in sorted path order
    skipped: tuple[Path, ...]  # files that could not be decoded as images


def scan(root: str | Path, classes: Sequence[str] | None = None) -> ImageFolder:
    """Index root/<class>/*. Classes are the sorted sub-folder names, or exactly `classes` (in
    that order) when given: the head order of a model, or the classes of the training folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist or is not a directory")
    found = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p)))
    if not found:
        raise DataError(f"data directory {root} has no class sub-folders (expected root/<class>/)")
    if classes is not None:
        if sorted(classes) != list(found):
            raise DataError(
                f"classes in {root} ({', '.join(found)}) differ from the expected classes "
                f"({', '.join(classes)})"
            )
        found = tuple(classes)
    files = [
        (path, label)
        for label, name in enumerate(found)
        for path in image_files(root / name, recursive=False)
    ]
    # PIL releases the GIL while decoding, so a few threads make the scan several times faster.
    with ThreadPoolExecutor(max_workers=4) as pool:
        readable = list(pool.map(_readable, (path for path, _ in files)))
    samples = tuple(sample for sample, ok in zip(files, readable, strict=True) if ok)
    skipped = tuple(path for (path, _), ok in zip(files, readable, strict=True) if not ok)
    counts = np.bincount([label for _, label in samples], minlength=len(found))
    empty = [name for name, n in zip(found, counts, strict=True) if n == 0]
    if empty:
        raise DataError(f"no readable images in class folder(s) {', '.join(empty)} under {root}")
    return ImageFolder(root, found, samples, skipped)


def split(
    samples: Sequence[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """(train, val): a seeded, per-class split that keeps every class in both halves."""
    if not 0 < fraction < 1:
        raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
    by_class: dict[int, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(sample[1], []).append(sample)
    rng = random.Random(seed)
    train, val = [], []
    for label, group in sorted(by_class.items()):
        if len(group) < 2:
            raise DataError(f"class index {label} has {len(group)} image: too few to split")
        group = group[:]
        rng.shuffle(group)
        n_val = min(max(1, round(len(group) * fraction)), len(group) - 1)
        val += group[:n_val]
        train += group[n_val:]
    return train, val


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Samples decoded and preprocessed on demand: (3, S, S) float32 and the class index."""

    def __init__(self, samples: Sequence[Sample], config: ViTConfig) -> None:
        self.samples = list(samples)
        self.prepare = preprocessor(config)  # the service's decode + transform, for this model

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            x = self.prepare(path.read_bytes()).pixels  # (3, S, S)
        except (OSError, ServiceError) as e:  # it decoded during the scan: the file changed since
            raise DataError(f"{path}: no longer readable ({e})") from e
        return torch.from_numpy(x), label


class ShuffledStream(Sampler[int]):
    """Endless seeded permutations back to back: every micro-batch is full, no epoch bookkeeping."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            yield from torch.randperm(self.n, generator=generator).tolist()


def train_batches(
    dataset: Samples, micro_batch: int, seed: int, workers: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (B, 3, S, S) / (B,) micro-batches in a seeded order; workers only decode."""
    loader = DataLoader(
        dataset,
        batch_size=micro_batch,
        sampler=ShuffledStream(len(dataset), seed),
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    return iter(loader)


def eval_batches(
    dataset: Samples, batch: int, workers: int = 0
) -> DataLoader[tuple[torch.Tensor, int]]:
    return DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=workers)


def augment(batch: torch.Tensor, mode: Augment, generator: torch.Generator) -> torch.Tensor:
    """Random exact flips / right-angle turns of (B, 3, H, W) images, drawn from generator.

    flip: horizontal mirror, safe for natural photos. dihedral: any of the 8 symmetries of the
    square, for data whose classes do not depend on orientation (the synthetic shapes); of an
    H×W rectangle only the 4 that keep its shape (half turns, mirrors).
    """
    if mode == "none":
        return batch
    n = len(batch)
    mirror = torch.randint(0, 2, (n,), generator=generator).tolist()
    dihedral = mode == "dihedral"
    turns = torch.randint(0, 4, (n,), generator=generator).tolist() if dihedral else [0] * n
    if batch.shape[-2] != batch.shape[-1]:
        turns = [k // 2 * 2 for k in turns]  # a quarter turn would make it W×H
    out = []
    for x, m, k in zip(batch, mirror, turns, strict=True):  # x: (3, H, W)
        x = torch.rot90(x, k, dims=(1, 2)) if k else x
        out.append(x.flip(2) if m else x)
    return torch.stack(out)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _readable(path: Path) -> bool:
    """Whether the dataset will be able to use the file: the serving decoder's own verdict."""
    try:
        decode(path.read_bytes(), TRAINING_MAX_PIXELS)
        return True
    except (OSError, ServiceError):  # unreadable, not an image, too large: skip and count it
        return False
