"""Google ViT .npz files written by today's vit_jax code: Flax Linen names. Adapter and renaming.

Linen numbers a module's children per type, the released files (the older flax.nn) in creation
order across types, so one encoder block's arrays are the same under two spellings:

    Linen (vit_jax today)               released files
    LayerNorm_0                         LayerNorm_0
    MultiHeadDotProductAttention_0      MultiHeadDotProductAttention_1
    LayerNorm_1                         LayerNorm_2
    MlpBlock_0/Dense_{0,1}              MlpBlock_3/Dense_{0,1}

to_released renames the first column to the second, and npz.py does the rest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

from model_export.formats import npz
from model_export.formats.adapter import Adapter, Hints
from model_export.formats.base import State, reading
from model_export.formats.files import Checkpoint, Files
from model_export.model.vit import ViTConfig

T = TypeVar("T")
_LINEN = re.compile(
    r"^(Transformer/encoderblock_\d+/)(MultiHeadDotProductAttention_0|LayerNorm_1|MlpBlock_0)/"
)
_RELEASED = {
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}


def is_linen(keys: frozenset[str] | Mapping[str, object]) -> bool:
    return any(_LINEN.match(k) for k in keys)


def to_released(arrays: Mapping[str, T]) -> dict[str, T]:
    """Linen names -> the released files' names; every other array as it is."""
    return {_LINEN.sub(lambda m: f"{m[1]}{_RELEASED[m[2]]}/", k): v for k, v in arrays.items()}


def detect(keys: frozenset[str], files: Files) -> bool:
    if files.weights is None or files.weights.suffix != ".npz":
        return False
    return is_linen(keys) and npz.detect(frozenset(to_released(dict.fromkeys(keys))), files)


def load(checkpoint: Checkpoint, hints: Hints) -> tuple[ViTConfig, State]:
    arrays, path = to_released(checkpoint.arrays()), checkpoint.files.path
    return reading(path, npz.npz_config, arrays, hints.grid), reading(path, npz.from_npz, arrays)


ADAPTER = Adapter("npz-linen", detect, load)
