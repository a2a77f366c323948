"""The adapters in detection order, and the one choice of which reads a checkpoint."""

from __future__ import annotations

from pathlib import Path

from model_export.formats import (
    dinov2,
    hf,
    hf_clip,
    hf_deit,
    hf_dinov2,
    hf_siglip,
    native,
    npz,
    npz_hybrid,
    npz_linen,
    open_clip,
    timm,
    timm_hybrid,
)
from model_export.formats.adapter import Adapter
from model_export.formats.base import CheckpointError
from model_export.formats.files import CONFIG, Checkpoint, open_checkpoint

# First match wins: a specific adapter goes before a general one that would also say yes.
ADAPTERS: tuple[Adapter, ...] = (
    hf.ADAPTER,
    timm.ADAPTER,
    npz.ADAPTER,
    timm_hybrid.ADAPTER,
    npz_linen.ADAPTER,
    npz_hybrid.ADAPTER,
    hf_deit.ADAPTER,
    hf_dinov2.ADAPTER,
    hf_clip.ADAPTER,
    hf_siglip.ADAPTER,
    dinov2.ADAPTER,
    open_clip.ADAPTER,
    native.ADAPTER,
)
FORMATS: tuple[str, ...] = ("auto", *(a.name for a in ADAPTERS))
HF_MODEL_TYPES = (
    "vit",
    *hf_deit.FAMILY.model_types,
    *hf_dinov2.FAMILIES,
    *hf_clip.FAMILY.model_types,
    *hf_siglip.FAMILY.model_types,
)
_BY_NAME = {a.name: a for a in ADAPTERS}


def check_format(format: str) -> None:
    if format not in FORMATS:
        raise CheckpointError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")


def choose(checkpoint: Checkpoint, format: str = "auto") -> Adapter:
    """The adapter for checkpoint: the first that detects it, or the named one if it agrees."""
    check_format(format)
    found = [a for a in ADAPTERS if a.detect(checkpoint.keys, checkpoint.files)]
    if format == "auto":
        if not found:
            raise _unrecognised(checkpoint)
        return found[0]
    if _BY_NAME[format] in found:
        return _BY_NAME[format]
    reads_as = f"it reads as {found[0].name!r}" if found else _keys_hint(checkpoint)
    raise CheckpointError(
        f"{checkpoint.files.path}: format {format!r} does not fit this checkpoint; {reads_as}"
    )


def detect_format(path: str | Path) -> str:
    """The name of the adapter that reads path, from its file names and keys alone."""
    return choose(open_checkpoint(Path(path))).name


def _unrecognised(checkpoint: Checkpoint) -> CheckpointError:
    files = checkpoint.files
    if files.is_folder:  # folders are told apart by their config.json
        if "model_type" in files.config:
            return CheckpointError(
                f"{files.path}: model_type {files.config['model_type']!r} is none of "
                f"{', '.join(repr(t) for t in HF_MODEL_TYPES)}"
            )
        return CheckpointError(f"{files.path / CONFIG}: neither a HF, timm nor native config")
    names = ", ".join(a.name for a in ADAPTERS)
    return CheckpointError(
        f"{files.path}: not a checkpoint of a known format ({names}); {_keys_hint(checkpoint)}"
    )


def _keys_hint(checkpoint: Checkpoint) -> str:
    keys = sorted(checkpoint.keys)
    if not keys:
        return "it holds no weights"
    return f"its keys: {', '.join(keys[:4])}{', …' if len(keys) > 4 else ''}"
