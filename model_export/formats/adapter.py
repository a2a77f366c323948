"""What every adapter is: a name for --format, a cheap test, and the reader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from model_export.formats.base import State
from model_export.formats.files import Checkpoint, Files
from model_export.model.vit import ViTConfig

Grid = tuple[int, int]  # (rows, cols) of patch tokens


@dataclass(frozen=True)
class Hints:
    """What the caller knows that some files do not record (the CLIs' --heads and --grid).

    heads: timm files of a non-standard width say nothing of the head count.
    grid: the token grid (rows, cols) the position embeddings were trained on; a file without a
        config (Google's .npz, a bare timm file) records only their number, which gives the grid
        only when it is square. Where a file does record its sizes, a hint must agree with them.
    """

    heads: int | None = None
    grid: Grid | None = None


@dataclass(frozen=True)
class Adapter:
    """One source format: a name for --format, a cheap test, and the reader.

    detect(keys, files) sees only the weights' key names and the folder's file names (plus its
    config.json), never a tensor, and answers "is this mine?". load(checkpoint, hints) reads the
    tensors (once, through the checkpoint) and returns our state dict with the ViTConfig it
    implies; hints are the caller's head count and grid, for sources that do not record them.
    """

    name: str
    detect: Callable[[frozenset[str], Files], bool]
    load: Callable[[Checkpoint, Hints], tuple[ViTConfig, State]]
