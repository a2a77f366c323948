"""timm (and open_clip), imported for parity tests only, and their outputs in our vocabulary.

timm imports torchvision when it loads, and torchvision cannot be installed next to the CPU torch
here: absent, or (as pip installs it for timm into a fresh venv) a CUDA build whose operators fail
to register. Unless a working torchvision imports, stand_ins/torchvision (names only, each raising
if used) is put on sys.path just long enough for `import timm`; timm's models never call into it.
open_clip, when installed (pip install --no-deps open_clip_torch ftfy wcwidth), loads the same way.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

STAND_INS = Path(__file__).parent / "stand_ins"


def import_timm() -> ModuleType:
    return _import_with_stand_in("timm")


def import_open_clip() -> ModuleType | None:
    """open_clip, or None where it is not installed (its parity tests then skip)."""
    if importlib.util.find_spec("open_clip") is None or importlib.util.find_spec("ftfy") is None:
        return None
    import_timm()  # open_clip imports timm: the stand-in must be in place first, or known bad
    return _import_with_stand_in("open_clip")


def _import_with_stand_in(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    if _real_torchvision_works():
        return importlib.import_module(name)
    sys.path.insert(0, str(STAND_INS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(STAND_INS))


def _real_torchvision_works() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        importlib.import_module("torchvision")
        return True
    except Exception:  # a build for another torch: RuntimeError from its operator registration
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # the half-imported package must not shadow the stand-in
        return False


def timm_outputs(
    model: nn.Module, pixels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits (B, K), [CLS] embedding (B, D), attentions (B, L, H, N+1, N+1)) from a timm ViT.

    The attention weights are caught with forward hooks (`attention_weights`).
    """
    with attention_weights(model) as weights, torch.no_grad():
        tokens = model.forward_features(pixels)  # (B, N+1, D), after the final norm
        logits = model.forward_head(tokens)
    return logits, tokens[:, 0], torch.stack(weights, dim=1)


@contextmanager
def attention_weights(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Every block's attention weights (B, H, T, T), in order, for the forward passes inside the
    block: what timm's non-fused path passes through attn_drop (identity in eval)."""
    weights: list[torch.Tensor] = []
    hooks = []
    for block in model.blocks:
        block.attn.fused_attn = False  # the fused kernel never materialises the weights
        hooks.append(block.attn.attn_drop.register_forward_hook(lambda m, i, o: weights.append(o)))
    try:
        yield weights
    finally:
        for h in hooks:
            h.remove()


FAMILY_TOLERANCE = 1e-5  # rel_error the ViT family must reproduce its own code's outputs within


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest absolute difference relative to the reference's largest magnitude."""
    return ((got - want).abs().max() / want.abs().max()).item()
