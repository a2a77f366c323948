"""On-the-fly augmentation: shifts move pixels and nothing else; recolouring remaps channels."""

from __future__ import annotations

import torch

from model_export.training.augment import recolour, shift

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def batch(n: int = 16, size: int = 12) -> torch.Tensor:
    """(n, 3, S, S) normalised pixels: a different ramp in each channel."""
    ramp = torch.linspace(-1, 1, size * size).view(1, size, size)
    return torch.stack([torch.cat([ramp, ramp.flip(2), ramp.mT]) * (1 - k / n) for k in range(n)])


def test_shift_moves_each_image_by_at_most_the_limit() -> None:
    x = batch()
    out = shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    moved = 0
    for before, after in zip(x, out, strict=True):
        # Some offset in [-2, 2]² maps the interior of one onto the other.
        found = any(
            torch.equal(after[:, 2:-2, 2:-2], before[:, 2 + dy : 10 + dy, 2 + dx : 10 + dx])
            for dx in range(-2, 3)
            for dy in range(-2, 3)
        )
        assert found
        moved += not torch.equal(after, before)
    assert moved > len(x) // 2
    assert shift(x, 0, torch.Generator()) is x


def test_recolour_with_p_zero_is_the_identity_and_p_one_changes_everything() -> None:
    x = batch()
    assert recolour(x, 0.0, MEAN, STD, torch.Generator()) is x
    out = recolour(x, 1.0, MEAN, STD, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert sum(not torch.allclose(a, b) for a, b in zip(out, x, strict=True)) >= len(x) - 1


def test_recolour_is_a_per_channel_monotone_remap_then_a_permutation() -> None:
    """Each output channel is some input channel through a gamma curve, maybe inverted: its
    pixel order is that channel's order, or its exact reverse (a polarity flip)."""
    x = batch(n=32)
    out = recolour(x, 1.0, MEAN, STD, torch.Generator().manual_seed(2))
    inverted = 0
    for before, after in zip(x, out, strict=True):
        for channel in after:
            orders = [torch.argsort(c.flatten(), stable=True) for c in before]
            rising = any(torch.all(channel.flatten()[o].diff() >= -1e-6) for o in orders)
            falling = any(torch.all(channel.flatten()[o].diff() <= 1e-6) for o in orders)
            assert rising or falling
            inverted += falling and not rising
    assert inverted > 0  # polarity flips happen


def test_the_same_seed_gives_the_same_augmentation() -> None:
    x = batch()
    a = recolour(shift(x, 1, torch.Generator().manual_seed(3)), 0.5, MEAN, STD, torch.Generator())
    g = torch.Generator().manual_seed(3)
    b = recolour(shift(x, 1, g), 0.5, MEAN, STD, torch.Generator())
    assert torch.equal(a, b)
