"""The checkpoint options vit-train, vit-export and vit-inspect share: sizes on the command line.

--grid RxC        the token grid of a checkpoint whose file does not record its input size
--image-size S|HxW
"""

from __future__ import annotations

import argparse

GRID_HELP = (
    "the token grid RxC (rows x columns, e.g. 5x7) of a checkpoint whose file does not record "
    "its input size (a Google .npz or a bare timm file of a non-square model)"
)


def grid_arg(text: str) -> tuple[int, int]:
    """--grid RxC: rows × columns of patch tokens, e.g. 5x7 (a 160×224 input at stride 32)."""
    sides = _sides(text)
    if len(sides) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not RxC, rows x columns of tokens (5x7)")
    return sides[0], sides[1]


def image_size_arg(text: str) -> int | tuple[int, int]:
    """--image-size: S for S×S, or HxW."""
    sides = _sides(text)
    if len(sides) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{text!r} is not S or HxW in pixels")
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


def _sides(text: str) -> list[int]:
    try:
        sides = [int(s) for s in text.lower().split("x")]
    except ValueError:
        return []
    return sides if min(sides, default=0) >= 1 else []
