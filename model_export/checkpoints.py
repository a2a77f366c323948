"""Checkpoint loaders: one pure key-mapping function per source format, then one load_checkpoint.

The project's own ("native") format is a folder: model.safetensors (this ViT's state dict),
config.json (ViTConfig without labels) and labels.json (class names in head order).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model_export.model import ViT, ViTConfig

NATIVE_WEIGHTS = "model.safetensors"
NATIVE_CONFIG = "config.json"
NATIVE_LABELS = "labels.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit a ViT; the message says exactly why."""


def save_native(model: ViT, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    labels = config.pop("labels")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / NATIVE_WEIGHTS))
    (folder / NATIVE_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (folder / NATIVE_LABELS).write_text(json.dumps(list(labels), indent=2) + "\n")
    return folder


def load_native(folder: str | Path) -> ViT:
    folder = Path(folder)
    config = _read_json(folder / NATIVE_CONFIG)
    labels_path = folder / NATIVE_LABELS
    config["labels"] = tuple(_read_json(labels_path)) if labels_path.exists() else ()
    try:
        cfg = ViTConfig.from_dict(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / NATIVE_CONFIG}: {e}") from e
    return build_model(cfg, _read_safetensors(folder / NATIVE_WEIGHTS))


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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers/data
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
