"""A checkpoint on disk, opened once: its files listed, its weight keys read, no tensor loaded.

Safe reading only: safetensors, numpy without pickle, torch.load(weights_only=True). Key names come
cheaply where the file allows it (a safetensors header, a sharded index's weight_map, a zip's
directory of .npz arrays); a torch pickle must be loaded to learn its keys, so that load is kept
and handed to the adapter rather than repeated.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from model_export.formats.base import CheckpointError, State, read_json

CONFIG = "config.json"
OPEN_CLIP_CONFIG = "open_clip_config.json"  # an open_clip hub folder's, in place of config.json
# Weight files a hub folder may hold, in order of preference: safetensors first; open_clip's last,
# as a folder with both (a CLIP on the hub for transformers and open_clip) reads as transformers'.
HUB_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".npz")
INDEX = ".index.json"
_WRAPPERS = ("state_dict", "model")  # training scripts save {"state_dict": sd, "epoch": ...}


@dataclass(frozen=True)
class Files:
    """Where the checkpoint lives: the folder's file names, listed once, and its JSON sidecars."""

    path: Path  # what the caller named: a folder or one weights file
    is_folder: bool
    weights: Path | None  # the file given, or the folder's preferred hub weights; None: none there
    names: frozenset[str]  # file names in the folder (a file's own folder)

    @property
    def folder(self) -> Path:
        return self.path if self.is_folder else self.path.parent

    @cached_property
    def config(self) -> dict[str, Any]:
        """config.json beside the weights, read on first use; {} when there is none."""
        return self.json(CONFIG)

    def json(self, name: str) -> dict[str, Any]:
        return read_json(self.folder / name, dict) if name in self.names else {}


@dataclass(frozen=True)
class Checkpoint:
    """Files plus the weights' key names; a load reads the data through tensors() or arrays()."""

    files: Files
    keys: frozenset[str]
    state: State | None = field(default=None, repr=False)  # a torch pickle, loaded for its keys

    def tensors(self) -> State:
        """The weights as a torch state dict (safetensors, torch pickle, or sharded index)."""
        if self.state is not None:
            return self.state
        weights = self._weights()
        if weights.name.endswith(INDEX):
            return {k: v for shard in _shards(weights) for k, v in _read_tensors(shard).items()}
        return _read_tensors(weights)

    def arrays(self) -> dict[str, np.ndarray]:
        """The weights as numpy arrays: a .npz file, read without pickle."""
        weights = self._weights()
        try:
            with np.load(weights, allow_pickle=False) as npz:  # object arrays need pickle: refused
                return {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError) as e:
            raise CheckpointError(f"{weights}: not a readable .npz file ({e})") from e

    def _weights(self) -> Path:
        if self.files.weights is None:
            folder = self.files.folder
            raise CheckpointError(f"{folder}: no weights; expected one of {', '.join(HUB_WEIGHTS)}")
        return self.files.weights


def open_checkpoint(path: Path) -> Checkpoint:
    """List path's folder and read its weights' key names; raise CheckpointError if unreadable."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        names = frozenset(p.name for p in path.iterdir())
        if CONFIG not in names and OPEN_CLIP_CONFIG not in names:
            raise CheckpointError(
                f"{path}: a checkpoint folder needs a {CONFIG} (or open_clip's {OPEN_CLIP_CONFIG})"
            )
        weights = next((path / n for n in HUB_WEIGHTS if n in names), None)
        files = Files(path, True, weights, names)
    elif path.suffix in WEIGHT_SUFFIXES:
        files = Files(path, False, path, frozenset(p.name for p in path.parent.iterdir()))
    else:
        raise CheckpointError(
            f"{path}: unknown checkpoint type; expected a folder, {', '.join(WEIGHT_SUFFIXES)}"
        )
    if files.weights is None:
        return Checkpoint(files, frozenset())
    return _read_keys(files, files.weights)


def _read_keys(files: Files, weights: Path) -> Checkpoint:
    if weights.name.endswith(INDEX):  # sharded: {"weight_map": {key: shard file name}}
        return Checkpoint(files, frozenset(read_json(weights, dict).get("weight_map") or ()))
    if weights.suffix == ".safetensors":
        return Checkpoint(files, _safetensors_keys(weights))
    if weights.suffix == ".npz":
        return Checkpoint(files, _npz_keys(weights))
    state = _read_torch(weights)
    return Checkpoint(files, frozenset(state), state)


def _safetensors_keys(path: Path) -> frozenset[str]:
    try:  # reads the header only; the tensors stay on disk
        with safe_open(str(path), framework="pt") as f:
            return frozenset(f.keys())
    except Exception as e:  # safetensors raises its own error types for corrupt headers/data
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def _npz_keys(path: Path) -> frozenset[str]:
    try:  # the zip directory only: arrays are read when indexed, never here
        with np.load(path, allow_pickle=False) as npz:
            return frozenset(npz.files)
    except (OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{path}: not a readable .npz file ({e})") from e


def _shards(index: Path) -> list[Path]:
    shards = sorted(set(read_json(index, dict).get("weight_map", {}).values()))
    if not shards:
        raise CheckpointError(f"{index}: the index has no weight_map")
    return [index.parent / shard for shard in shards]


def _read_tensors(path: Path) -> State:
    if path.suffix != ".safetensors":
        return _read_torch(path)
    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers/data
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def _read_torch(path: Path) -> State:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler met something not data
        unsafe = _unsafe_globals(path)
        why = f"it pickles code ({', '.join(unsafe)}), never unpickled here" if unsafe else ""
        raise CheckpointError(
            f"{path}: refused: {why or 'corrupt, or it pickles objects beyond tensors'}"
        ) from e
    except Exception as e:  # torch reports corrupt/truncated files as RuntimeError, OSError, ...
        raise CheckpointError(
            f"{path}: not a readable PyTorch file, corrupt or truncated ({e})"
        ) from e
    if isinstance(obj, dict):
        obj = next((obj[w] for w in _WRAPPERS if isinstance(obj.get(w), dict)), obj)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors")
    return obj


def _unsafe_globals(path: Path) -> list[str]:
    """The functions/classes a torch.save zip would import, read without unpickling anything."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a torch.save zip at all: nothing to name
        return []
