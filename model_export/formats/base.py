"""What every adapter shares: the one error type, the state-dict type, JSON reading."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

State = dict[str, torch.Tensor]
T = TypeVar("T")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit a ViT; the message says exactly why."""


def reading(source: Path, read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a mapping or config reader; any ValueError/TypeError becomes a CheckpointError."""
    try:
        return read(*args, **kwargs)
    except CheckpointError:
        raise
    except (TypeError, ValueError) as e:  # ViTConfig and the mappings raise ValueError
        raise CheckpointError(f"{source}: {e}") from e


def read_json(path: Path, kind: type[T]) -> T:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, kind):
        raise CheckpointError(f"{path}: expected a JSON {kind.__name__}")
    return data


def rgb(value: float | list[float], name: str) -> tuple[float, float, float]:
    """One value per RGB channel, from a scalar or a list (HF and timm write both)."""
    values = [value] * 3 if isinstance(value, int | float) else list(value)
    if len(values) != 3:
        raise ValueError(f"{name} {value} does not give one value per RGB channel")
    return (float(values[0]), float(values[1]), float(values[2]))
