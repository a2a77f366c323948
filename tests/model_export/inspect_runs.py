"""What the vit-inspect tests share: the demo paths, a folder of images with traps, a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from model_export.demo.shapes import CLASSES, draw_shape
from model_export.inspection.inspector import REPORT, main

ROOT = Path(__file__).resolve().parents[2]
DEMO_CHECKPOINT = ROOT / "checkpoints" / "demo"
DEMO_BUNDLE = ROOT / "models" / "demo"
SIZES = (160, 224, 300)  # not all the model's 224: the transform resizes


def image_folder(root: Path) -> Path:
    """One shape per class in sub-folders, at several sizes; a text file, a hidden file and a
    300 MiB (sparse) video too."""
    for i, kind in enumerate(CLASSES):
        (root / kind).mkdir()
        image, _ = draw_shape(kind, SIZES[i % len(SIZES)], np.random.default_rng([7, i]))
        image.save(root / kind / ("0.png" if i % 2 else "0.jpg"), quality=95)
    (root / "notes.txt").write_text("not an image")  # not named as one: never listed
    (root / "notes.jpg").write_text("not an image")  # named as one: tried, skipped, reported
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    with open(root / "video.png", "wb") as f:
        f.truncate(300 * 2**20)  # sparse: costs no disk, but must not be read into memory
    return root


def run(model: Path, images: Path, out: Path) -> dict[str, Any]:
    """vit-inspect in-process, expecting success; the report it wrote."""
    assert main([str(model), "--images", str(images), "--out", str(out), "--batch-size", "4"]) == 0
    return json.loads((out / REPORT).read_text())
