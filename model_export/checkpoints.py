"""Checkpoint loaders: read a checkpoint's files safely, map its keys, build one checked ViT.

    load_checkpoint(path, format="auto", heads=None) -> ViT (eval mode)

Each source has a pure mapping, state dict in and our state dict out (timm's checkpoint_filter_fn
habit), and a config reader, each in a module of its own: from_hf/hf_config in hf.py,
from_timm/timm_config in timm_format.py, from_npz/npz_config in npz.py. They raise ValueError;
the _load_* glue here reports it as a CheckpointError naming the file. build_model then checks
every key and shape against the config, so a mismatch is one CheckpointError naming the missing,
unexpected and mis-shaped keys.

- native: our folder: model.safetensors (this ViT's state dict), config.json (ViTConfig without
  labels), labels.json (class names in head order).
- hf: a transformers ViTModel / ViTForImageClassification folder (config.json with model_type
  "vit"; safetensors or pytorch_model.bin, optionally sharded), in 4.x or 5.x parameter names.
- timm: a VisionTransformer state dict file, or a timm hub folder (config.json with "architecture").
- npz: Google's original Flax .npz.

Only data is ever deserialised: safetensors, numpy without pickle, torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from model_export.hf import _looks_hf, from_hf, hf_config
from model_export.model import ViT, ViTConfig
from model_export.npz import from_npz, npz_config
from model_export.timm_format import from_timm, infer_heads, timm_config

__all__ = [  # the mappings are re-exported: callers and tests import them from here
    "FORMATS",
    "NATIVE_CONFIG",
    "NATIVE_LABELS",
    "NATIVE_WEIGHTS",
    "CheckpointError",
    "build_model",
    "detect_format",
    "from_hf",
    "from_npz",
    "from_timm",
    "hf_config",
    "infer_heads",
    "load_checkpoint",
    "load_native",
    "npz_config",
    "save_native",
    "timm_config",
]

Format = Literal["auto", "hf", "timm", "npz", "native"]
FORMATS: tuple[str, ...] = get_args(Format)
State = dict[str, torch.Tensor]
T = TypeVar("T")

NATIVE_WEIGHTS = "model.safetensors"
NATIVE_CONFIG = "config.json"
NATIVE_LABELS = "labels.json"
HF_PREPROCESSOR = "preprocessor_config.json"
# Weight files a hub folder (HF or timm) may hold, in order of preference: safetensors first.
HUB_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_WRAPPERS = ("state_dict", "model")  # training scripts save {"state_dict": sd, "epoch": ...}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit a ViT; the message says exactly why."""


def load_checkpoint(path: str | Path, format: str = "auto", heads: int | None = None) -> ViT:
    """An eval-mode ViT from a checkpoint, its config inferred from the weights and config files.

    heads is needed only for timm files of a non-standard width, which do not record it; for the
    other sources it must agree with the checkpoint.
    """
    path = Path(path)
    if format not in FORMATS:
        raise CheckpointError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    source = detect_format(path) if format == "auto" else format
    model = _LOADERS[source](path, heads)
    if heads is not None and heads != model.config.heads:
        raise CheckpointError(f"heads={heads} was given but {path} has {model.config.heads} heads")
    return model


def detect_format(path: Path) -> str:
    """hf | timm | npz | native, from a folder's config.json or a file's suffix and keys."""
    if path.is_dir():
        if not (path / NATIVE_CONFIG).exists():
            raise CheckpointError(f"{path}: a checkpoint folder needs a {NATIVE_CONFIG}")
        config = _read_json(path / NATIVE_CONFIG, dict)
        if config.get("model_type") == "vit":
            return "hf"
        if "model_type" in config:
            raise CheckpointError(f"{path}: model_type {config['model_type']!r} is not 'vit'")
        if "architecture" in config:
            return "timm"
        if set(config) <= set(ViTConfig.__dataclass_fields__):
            return "native"
        raise CheckpointError(f"{path / NATIVE_CONFIG}: neither a HF, timm nor native config")
    if path.suffix == ".npz":
        return "npz"
    if path.suffix in WEIGHT_SUFFIXES:
        return "hf" if _looks_hf(_read_weights(path)) else "timm"
    raise CheckpointError(
        f"{path}: unknown checkpoint type; expected a folder, .npz, {', '.join(WEIGHT_SUFFIXES)}"
    )


# --- native ------------------------------------------------------------------------------------


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
    config = _read_json(folder / NATIVE_CONFIG, dict)
    labels_path = folder / NATIVE_LABELS
    config["labels"] = tuple(_read_json(labels_path, list)) if labels_path.exists() else ()
    cfg = _reading(folder / NATIVE_CONFIG, ViTConfig.from_dict, config)
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


# --- HuggingFace transformers (mapping in hf.py) -----------------------------------------------


def _load_hf(path: Path, heads: int | None) -> ViT:
    folder = path if path.is_dir() else path.parent
    weights = _hub_weights(folder) if path.is_dir() else path
    state = _reading(weights, from_hf, _read_weights(weights))
    config_path = folder / NATIVE_CONFIG
    config = _read_json(config_path, dict) if config_path.exists() else {}
    if config.get("model_type") != "vit":
        # A bare HF-keyed file: its shapes give all but the head count, which follows timm's rule.
        return build_model(_reading(path, timm_config, state, heads, {}, hf_defaults=True), state)
    pre_path = folder / HF_PREPROCESSOR
    pre = _read_json(pre_path, dict) if pre_path.exists() else {}
    return build_model(_reading(config_path, hf_config, config, pre, state), state)


# --- timm (mapping in timm_format.py) ----------------------------------------------------------


def _load_timm(path: Path, heads: int | None) -> ViT:
    weights = _hub_weights(path) if path.is_dir() else path
    sidecar_path = weights.parent / NATIVE_CONFIG
    sidecar = _read_json(sidecar_path, dict) if sidecar_path.exists() else {}
    if "architecture" not in sidecar:  # a config.json that is not timm's says nothing here
        sidecar = {}
    state = _reading(weights, from_timm, _read_weights(weights))
    return build_model(_reading(path, timm_config, state, heads, sidecar), state)


# --- Google .npz (mapping in npz.py) -----------------------------------------------------------


def _load_npz(path: Path, heads: int | None) -> ViT:
    try:
        with np.load(path, allow_pickle=False) as npz:  # object arrays need pickle: refused
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{path}: not a readable .npz file ({e})") from e
    return build_model(_reading(path, npz_config, arrays), _reading(path, from_npz, arrays))


# --- reading files -----------------------------------------------------------------------------


def _hub_weights(folder: Path) -> Path:
    for name in HUB_WEIGHTS:
        if (folder / name).exists():
            return folder / name
    raise CheckpointError(f"{folder}: no weights; expected one of {', '.join(HUB_WEIGHTS)}")


def _read_weights(path: Path) -> State:
    """A state dict from a safetensors, torch or sharded-index file, reading data only."""
    if path.name.endswith(".index.json"):
        # Sharded hub checkpoints: {"weight_map": {key: shard file name}}.
        shards = sorted(set(_read_json(path, dict).get("weight_map", {}).values()))
        if not shards:
            raise CheckpointError(f"{path}: the index has no weight_map")
        return {k: v for shard in shards for k, v in _read_weights(path.parent / shard).items()}
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _read_torch(path)


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


def _read_safetensors(path: Path) -> State:
    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers/data
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def _read_json(path: Path, kind: type[T]) -> T:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, kind):
        raise CheckpointError(f"{path}: expected a JSON {kind.__name__}")
    return data


# --- small helpers -----------------------------------------------------------------------------


def _reading(source: Path, read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a mapping or config reader; any ValueError/TypeError becomes a CheckpointError."""
    try:
        return read(*args, **kwargs)
    except (TypeError, ValueError) as e:  # ViTConfig and the mappings raise ValueError
        raise CheckpointError(f"{source}: {e}") from e


_LOADERS: dict[str, Callable[[Path, int | None], ViT]] = {
    "native": lambda path, _heads: load_native(path),
    "hf": _load_hf,
    "timm": _load_timm,
    "npz": _load_npz,
}
