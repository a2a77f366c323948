"""On-the-fly augmentation of normalised (B, C, S, S) batches: cheap tensor ops, seeded.

Drawing or decoding an image costs far more on a CPU than these few element-wise operations, so
appearance and position variety is bought here, in the training loop, rather than by drawing more:

    shift:    translate each image by up to `pixels` in x and y, edges replicated (Fashion-MNIST)
    recolour: with probability p, remap each channel's intensities (a random gamma, then an
              inversion with probability 1/2) and permute the channels; inverting all three
              channels is a polarity flip (dark shapes on light grounds), inverting some of them
              and permuting turns a brightness contrast into a hue contrast (the shapes demo).

Both work in [0, 1] pixel space (x·std + mean) and return normalised pixels again, so the model
sees what the service would have produced from a recoloured file (up to 8-bit rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

_GAMMA = 0.5  # log-gamma drawn from U(-0.5, 0.5): gammas 0.61-1.65, contrast bent, never erased


def shift(batch: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each (C, S, S) image moved by its own integer offset in [-pixels, pixels]², edge-padded."""
    if pixels == 0:
        return batch
    n, _, s, _ = batch.shape
    padded = F.pad(batch, (pixels,) * 4, mode="replicate")  # (B, C, S+2p, S+2p)
    dx, dy = torch.randint(0, 2 * pixels + 1, (2, n), generator=generator).tolist()
    offsets = enumerate(zip(dx, dy, strict=True))
    moved = [padded[i, :, y : y + s, x : x + s] for i, (x, y) in offsets]
    return torch.stack(moved)


def recolour(
    batch: torch.Tensor,
    p: float,
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator,
) -> torch.Tensor:
    """A fraction p of the (B, 3, S, S) images with remapped and permuted channels."""
    if p == 0:
        return batch
    n, c = batch.shape[:2]
    m = torch.tensor(mean, dtype=batch.dtype).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=batch.dtype).view(1, c, 1, 1)
    x = (batch * s + m).clamp(0, 1)  # (B, C, S, S) in [0, 1]
    chosen = torch.rand(n, generator=generator) < p  # (B,)
    gamma = torch.exp(_GAMMA * (2 * torch.rand(n, c, 1, 1, generator=generator) - 1))
    invert = torch.rand(n, c, 1, 1, generator=generator) < 0.5  # (B, C, 1, 1)
    remapped = x.pow(gamma)
    remapped = torch.where(invert, 1 - remapped, remapped)
    order = torch.argsort(torch.rand(n, c, generator=generator), dim=1)  # (B, C) permutations
    remapped = torch.gather(remapped, 1, order.view(n, c, 1, 1).expand_as(remapped))
    out = torch.where(chosen.view(n, 1, 1, 1), remapped, x)
    return (out - m) / s
