"""This project's own checkpoint folder: the adapter, and the writer that makes one.

    model.safetensors   this ViT's state dict, our names
    config.json         ViTConfig without labels (every key a ViTConfig field)
    labels.json         class names in head order

Detected by a folder whose config.json holds only ViTConfig fields (HF's has model_type, timm's
architecture).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from model_export.formats.adapter import Adapter, Hints
from model_export.formats.base import CheckpointError, State, read_json, reading
from model_export.formats.files import Checkpoint, Files
from model_export.model.vit import ViT, ViTConfig

NATIVE_WEIGHTS = "model.safetensors"
NATIVE_CONFIG = "config.json"
NATIVE_LABELS = "labels.json"
_FIELDS = frozenset(ViTConfig.__dataclass_fields__)


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


def detect(keys: frozenset[str], files: Files) -> bool:
    return files.is_folder and NATIVE_CONFIG in files.names and set(files.config) <= _FIELDS


def load(checkpoint: Checkpoint, hints: Hints) -> tuple[ViTConfig, State]:
    files = checkpoint.files
    if NATIVE_WEIGHTS not in files.names:
        raise CheckpointError(f"{files.folder / NATIVE_WEIGHTS}: file not found")
    config = dict(files.config)
    labels = read_json(files.folder / NATIVE_LABELS, list) if NATIVE_LABELS in files.names else []
    config["labels"] = tuple(labels)
    return reading(files.folder / NATIVE_CONFIG, ViTConfig.from_dict, config), checkpoint.tensors()


ADAPTER = Adapter("native", detect, load)
