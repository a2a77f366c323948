"""Checkpoints in, one checked ViT out: the public entry to model_export.formats.

    load_checkpoint(path, format="auto", heads=None, grid=None) -> Loaded(model, format)

The checkpoint is opened once (file names and weight keys, no tensors), one adapter chosen (the
first whose detect says yes, or --format's), its (ViTConfig, state_dict) built into a ViT by
build_model, which checks every key and shape against the config, so a mismatch is one
CheckpointError naming the missing, unexpected and mis-shaped keys. Only data is ever
deserialised: safetensors, numpy without pickle, torch.load(weights_only=True).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from model_export.formats import FORMATS, CheckpointError, check_format, choose, open_checkpoint
from model_export.formats.adapter import Grid, Hints
from model_export.formats.native import NATIVE_CONFIG, NATIVE_LABELS, NATIVE_WEIGHTS, save_native
from model_export.model.vit import ViT, ViTConfig

__all__ = [
    "FORMATS",
    "NATIVE_CONFIG",
    "NATIVE_LABELS",
    "NATIVE_WEIGHTS",
    "CheckpointError",
    "Loaded",
    "build_model",
    "load_checkpoint",
    "load_native",
    "save_native",
]


@dataclass(frozen=True)
class Loaded:
    model: ViT  # eval mode
    format: str  # the name of the adapter that read it, one of formats.FORMATS


def load_checkpoint(
    path: str | Path, format: str = "auto", heads: int | None = None, grid: Grid | None = None
) -> Loaded:
    """An eval-mode ViT from a checkpoint, its config inferred from the weights and config files.

    heads is needed only for timm files of a non-standard width, which do not record it; grid,
    the (rows, cols) of tokens, only for a non-square model whose file records no input size (a
    Google .npz, a bare timm file). For the other sources each must agree with the checkpoint.
    """
    path = Path(path)
    check_format(format)
    checkpoint = open_checkpoint(path)
    adapter = choose(checkpoint, format)
    model = build_model(*adapter.load(checkpoint, Hints(heads, grid)))
    if heads is not None and heads != model.config.heads:
        raise CheckpointError(f"heads={heads} was given but {path} has {model.config.heads} heads")
    if grid is not None and tuple(grid) != model.config.grid:
        rows, cols = model.config.grid
        raise CheckpointError(
            f"grid {grid[0]}x{grid[1]} was given but {path} has a {rows}x{cols} token grid"
        )
    return Loaded(model, adapter.name)


def load_native(folder: str | Path) -> ViT:
    return load_checkpoint(folder, "native").model


def build_model(config: ViTConfig, state: dict[str, torch.Tensor]) -> ViT:
    """A ViT for config holding state, or a CheckpointError naming every key that does not fit."""
    model = ViT(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped keys: {'; '.join(misshaped)}")
    if problems:
        raise CheckpointError("checkpoint does not match the config: " + " | ".join(problems))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()
