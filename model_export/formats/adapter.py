"""What every adapter is: a name for --format, a cheap test, and the reader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from model_export.formats.base import State
from model_export.formats.files import Checkpoint, Files
from model_export.model.vit import ViTConfig


@dataclass(frozen=True)
class Adapter:
    """One source format: a name for --format, a cheap test, and the reader.

    detect(keys, files) sees only the weights' key names and the folder's file names (plus its
    config.json), never a tensor, and answers "is this mine?". load(checkpoint, heads) reads the
    tensors (once, through the checkpoint) and returns our state dict with the ViTConfig it
    implies; heads is the caller's head count, for sources that do not record one.
    """

    name: str
    detect: Callable[[frozenset[str], Files], bool]
    load: Callable[[Checkpoint, int | None], tuple[ViTConfig, State]]
