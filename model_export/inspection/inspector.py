"""vit-inspect: the paper's Figure 7 (and Figure 6) for any checkpoint or bundle.

    vit-inspect CHECKPOINT_OR_BUNDLE --images DIR --out DIR

Writes to --out, from the model's weights and its attention over every image under DIR:
    filters.png               the top principal components of the patch-embedding filters (RGB)
    position_similarity.png   cosine similarity of each patch's position embedding with all others
    attention_distance.png    mean attention distance per head against depth
    rollout.png               attention rollout over the first few images, as /attention draws it
    inspect.json              the numbers behind them; "position_similarity" (N, N) over the patch
                              positions ([CLS] left out), "attention_distance" (L, H) in pixels
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model_export.cli_args import GRID_HELP, grid_arg
from model_export.formats.checkpoints import CheckpointError
from model_export.inspection.plots import (
    draw_attention_distance,
    draw_filters,
    draw_position_similarity,
    draw_rollout,
)
from model_export.inspection.sources import Inspectable, InspectError, open_model
from model_export.model.attention_distance import patch_distances
from vit_core.attention import overlay_png, rollout_grid
from vit_core.bundle import BundleError
from vit_core.errors import InvalidImage, ServiceError
from vit_core.images import IMAGE_SUFFIXES, Prepared, image_files

FILTER_COMPONENTS = 28  # the paper shows the first 28
FIGURES = {
    "filters": "filters.png",
    "position_similarity": "position_similarity.png",
    "attention_distance": "attention_distance.png",
    "rollout": "rollout.png",
}
REPORT = "inspect.json"
# A folder may hold videos or archives beside its pictures; no image is worth reading past this.
MAX_FILE_BYTES = 256 * 2**20


def filter_components(filters: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA of the D filters (D, 3, P, P) → top k components (k, 3, P, P), explained variance (k,).

    Each filter is one sample of 3·P·P values, centred over the D filters, as in the paper.
    """
    x = filters.reshape(len(filters), -1).astype(np.float64)  # (D, 3·P·P)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(k, len(s))
    ratio = s**2 / (s**2).sum()
    return vt[:k].reshape(k, *filters.shape[1:]), ratio[:k]


def position_similarity(pos_embed: np.ndarray) -> np.ndarray:
    """(N, D) position embeddings → (N, N) cosine similarity."""
    x = pos_embed.astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


@dataclass
class Measured:
    """What the pass over the images gathers."""

    distance_sum: np.ndarray  # (L, H) sum over images of the per-image mean distance
    used: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}
    rollouts: list[tuple[str, Prepared, np.ndarray]] = field(default_factory=list)  # (N,) each


def list_images(folder: Path) -> list[Path]:
    """Every image file under folder (vit_core's image_files); each is tried as an image."""
    if not folder.is_dir():
        raise InspectError(f"{folder}: not a folder of images")
    files = image_files(folder)
    if not files:
        raise InspectError(f"{folder}: no images (no {' '.join(sorted(IMAGE_SUFFIXES))} files)")
    return files


def measure(
    model: Inspectable, folder: Path, files: Sequence[Path], batch_size: int, rollouts: int
) -> Measured:
    """One pass over the images in batches: attention distance summed, a few rollouts kept.

    The rollout images are the first readable image of each of `rollouts` equal runs of the
    sorted files, so a folder of class sub-folders shows several classes rather than the first
    class's first images.
    """
    shown: set[int] = set()  # the runs that have their rollout image
    m = Measured(np.zeros((model.depth, model.heads), np.float64))
    with tqdm(total=len(files), desc="inspect", unit="image") as bar:
        for start in range(0, len(files), batch_size):
            batch = []
            for i, path in enumerate(files[start : start + batch_size], start):
                name = path.relative_to(folder).as_posix()
                run = i * rollouts // len(files)
                try:
                    prepared = model.preprocessor(_read(path), keep_image=run not in shown)
                except (ServiceError, OSError) as e:
                    m.skipped.append({"file": name, "reason": str(e)})
                else:
                    batch.append((name, prepared))
                    shown.add(run)
                bar.update()
            if batch:
                _explain_batch(model, batch, m)
    return m


def _read(path: Path) -> bytes:
    """The file's bytes, unless it is too big to be an image worth reading whole."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InvalidImage(f"{size / 2**20:.0f} MiB is too large for an image file")
    return path.read_bytes()


def _explain_batch(model: Inspectable, batch: list[tuple[str, Prepared]], m: Measured) -> None:
    pixels = np.stack([p.pixels for _, p in batch])  # (B, ...) as the explain graph takes them
    distance, rollout = model.explain(pixels)  # (B, L, H), (B, N)
    m.distance_sum += distance.astype(np.float64).sum(axis=0)
    m.used += len(batch)
    m.rollouts += [
        (n, p, r) for (n, p), r in zip(batch, rollout, strict=True) if p.image is not None
    ]


def inspect(
    source: Path,
    images: Path,
    out: Path,
    *,
    batch_size: int = 8,
    rollouts: int = 4,
    grid: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Everything vit-inspect does: figures and inspect.json in out; returns the report."""
    model = open_model(source, grid)
    files = list_images(images)
    m = measure(model, images, files, batch_size, rollouts)
    if not m.used:
        raise InspectError(f"{images}: none of its {len(files)} image files is a readable image")
    out.mkdir(parents=True, exist_ok=True)
    distance = m.distance_sum / m.used  # (L, H)
    similarity = position_similarity(model.pos_embed)  # (N, N)
    # What a head attending to every patch equally would score: the figure's reference line.
    uniform = float(patch_distances(model.layout).mean())
    rows, cols, _ = model.layout
    report: dict[str, Any] = {
        "model": str(source),
        "kind": model.kind,
        "image_size": model.image_size,
        "grid": [rows, cols],
        "images": {"used": m.used, "skipped": m.skipped},
        "filters": _filters(model, out),
        "position_similarity": _rounded(similarity),
        "attention_distance": _rounded(distance),
        "uniform_attention_distance": round(uniform, 6),
        "rollout": [
            {"image": name, "map": _rounded(r.reshape(rows, cols))} for name, _, r in m.rollouts
        ],
    }
    draw_position_similarity(similarity, rows, cols, out / FIGURES["position_similarity"])
    draw_attention_distance(
        distance, model.image_size, uniform, out / FIGURES["attention_distance"]
    )
    _draw_rollouts(m.rollouts, (rows, cols), out / FIGURES["rollout"])
    report["figures"] = {
        k: v for k, v in FIGURES.items() if k != "filters" or model.filters is not None
    }
    (out / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    return report


def _draw_rollouts(
    rollouts: list[tuple[str, Prepared, np.ndarray]], grid: tuple[int, int], path: Path
) -> None:
    """Each image and the service's own /attention overlay of its rollout over the (rows, cols)
    grid."""
    images = [p.image for _, p, _ in rollouts if p.image is not None]  # all: they were kept
    overlays = [
        overlay_png(image, p.box, rollout_grid(r, grid))
        for image, (_, p, r) in zip(images, rollouts, strict=True)
    ]
    draw_rollout([name for name, _, _ in rollouts], images, overlays, path)


def _filters(model: Inspectable, out: Path) -> dict[str, Any]:
    if model.filters is None:
        (out / FIGURES["filters"]).unlink(missing_ok=True)  # another model's would mislead
        return {"skipped": model.no_filters}
    components, ratio = filter_components(model.filters, FILTER_COMPONENTS)
    draw_filters(components, out / FIGURES["filters"])
    return {"components": len(components), "explained_variance_ratio": _rounded(ratio)}


def _rounded(x: np.ndarray) -> Any:
    return np.round(x.astype(np.float64), 6).tolist()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vit-inspect",
        description="Draw the paper's Figure 7 (filters, position embeddings, attention distance) "
        "and Figure 6 (attention rollout) for a checkpoint or a bundle.",
    )
    p.add_argument("model", type=Path, help="checkpoint (file or folder) or bundle folder")
    p.add_argument("--images", type=Path, required=True, help="folder of images (searched deeply)")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNGs and inspect.json")
    p.add_argument("--batch-size", type=_positive, default=8, help="images per forward pass")
    p.add_argument(
        "--rollout-images", type=_positive, default=4, help="images shown in rollout.png"
    )
    p.add_argument("--grid", type=grid_arg, metavar="RxC", help=GRID_HELP)
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        report = inspect(
            args.model,
            args.images,
            args.out,
            batch_size=args.batch_size,
            rollouts=args.rollout_images,
            grid=args.grid,
        )
    except (InspectError, CheckpointError, BundleError, OSError) as e:
        print(f"vit-inspect: error: {e}", file=sys.stderr)
        return 2
    print(_summary(args.out, report))
    return 0


def _summary(out: Path, report: dict[str, Any]) -> str:
    distance = np.asarray(report["attention_distance"])
    lines = [f"wrote {out}: {', '.join(report['figures'].values())} and {REPORT}"]
    images = report["images"]
    skipped = f" ({len(images['skipped'])} unreadable files skipped)" if images["skipped"] else ""
    lines.append(f"  {images['used']} images{skipped}")
    if "skipped" in report["filters"]:
        lines.append(f"  no filters.png: {report['filters']['skipped']}")
    for layer, row in enumerate(distance, start=1):
        heads = " ".join(f"{d:6.1f}" for d in row)
        lines.append(f"  layer {layer}: mean attention distance per head (px) {heads}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
