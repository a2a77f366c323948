"""Fashion-MNIST (Xiao et al. 2017) as tensors, through the service's own image transform.

    python -m model_export.demo.fashion_data --out pictures/ --per-class 5   # test images as PNGs

The data are the original idx files (Debian's dataset-fashion-mnist package installs them):
60,000 training and 10,000 test images, 28×28 greyscale, ten classes. Every image is written as
the greyscale PNG a user would upload and prepared by the service's Preprocessor (decode, grey →
RGB, resize, normalise), once per resolution; training then reads the tensors, not files.
"""

from __future__ import annotations

import argparse
import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from model_export.model.vit import ViTConfig
from model_export.preprocessing import preprocessor
from model_export.training.data import DataError

# The dataset's own label names, in its label order (the head order of the model).
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")  # where the Debian package puts them
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_UBYTE = 0x08  # the idx header's type code for unsigned bytes


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, 28, 28) uint8, white garment on black
    labels: np.ndarray  # (N,) int64 in [0, 10)


def load(root: Path, kind: str) -> Split:
    """The "train" (60,000) or "test" (10,000) split from root's idx files."""
    image_file, label_file = (root / name for name in _FILES[kind])
    for path in (image_file, label_file):
        if not path.is_file():
            raise DataError(
                f"{path} is missing: install Debian's dataset-fashion-mnist "
                "(make demo-fashion does) or pass --data with the idx files"
            )
    images, labels = read_idx(image_file), read_idx(label_file).astype(np.int64)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DataError(f"{image_file} and {label_file} do not hold matching images and labels")
    return Split(images, labels)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format, gzipped): 0, 0, type, ndim, big-endian sizes, data."""
    data = gzip.decompress(path.read_bytes())
    if data[:2] != b"\0\0" or data[2] != _IDX_UBYTE:
        raise DataError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def png(image: np.ndarray) -> bytes:
    """(28, 28) uint8 → the greyscale PNG file a user would post."""
    buffer = io.BytesIO()
    Image.fromarray(image, "L").save(buffer, "PNG")
    return buffer.getvalue()


class PixelDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images prepared once by the service's transform: ((3, S, S) float32, label) items."""

    def __init__(self, split: Split, config: ViTConfig) -> None:
        prepare = preprocessor(config)
        first = prepare(png(split.images[0])).pixels  # (3, S, S)
        # Grey → RGB copies the grey value into all three channels: one is kept, three are served.
        if not (np.array_equal(first[0], first[1]) and np.array_equal(first[0], first[2])):
            raise DataError("the service's transform does not give equal channels for grey input")
        size = config.image_size
        self.pixels = torch.empty(len(split.labels), 1, size, size)  # (N, 1, S, S)
        for i, image in enumerate(split.images):
            self.pixels[i, 0] = torch.from_numpy(prepare(png(image)).pixels[0])
        self.labels = torch.from_numpy(split.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.pixels[index].expand(3, -1, -1), int(self.labels[index])


def holdout(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(train, validation): a seeded per-class split of the training set for model selection."""
    rng = np.random.default_rng(seed)
    val = np.concatenate(
        [
            rng.permutation(np.flatnonzero(split.labels == k))[: round(fraction * n)]
            for k, n in enumerate(np.bincount(split.labels))
        ]
    )
    keep = np.setdiff1d(np.arange(len(split.labels)), val)
    return (
        Split(split.images[keep], split.labels[keep]),
        Split(split.images[np.sort(val)], split.labels[np.sort(val)]),
    )


def write_pngs(split: Split, out: Path, per_class: int) -> list[Path]:
    """The first per_class images of each class as out/<index>-<class>.png (a request's files)."""
    out.mkdir(parents=True, exist_ok=True)
    chosen = sorted(
        i for k in range(len(CLASSES)) for i in np.flatnonzero(split.labels == k)[:per_class]
    )
    paths = []
    for i in chosen:
        name = re.sub(r"[^A-Za-z]+", "-", CLASSES[split.labels[i]]).strip("-").lower()
        path = out / f"{i:05d}-{name}.png"
        path.write_bytes(png(split.images[i]))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m model_export.demo.fashion_data",
        description="Write Fashion-MNIST test images as the 28×28 greyscale PNGs a user posts.",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per-class", type=int, default=5)
    p.add_argument("--data", type=Path, default=DEFAULT_ROOT, help="folder of the idx .gz files")
    args = p.parse_args(argv)
    if args.per_class < 1:
        p.error("--per-class must be at least 1")
    try:
        paths = write_pngs(load(args.data, "test"), args.out, args.per_class)
    except DataError as e:
        p.exit(2, f"fashion_data: error: {e}\n")
    print(f"wrote {len(paths)} test images under {args.out}")


if __name__ == "__main__":
    main()
