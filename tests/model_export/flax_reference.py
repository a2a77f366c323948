"""Google's hybrid ResNet written straight from vit_jax's Flax semantics, in float64 numpy.

Independent of our mapping and of PyTorch: HWIO kernels standardised as vit_jax's
weight_standardize does ((w - μ) / (σ + 1e-5) over H, W, I), lax's "SAME" padding, flax.linen's
GroupNorm (32 groups, eps 1e-6), max-pool padded with -inf, units numbered from 1 with the stride
on the first unit's 3×3 conv (block1 keeps stride 1). images: (B, H, W, C), Flax's layout.
"""

from __future__ import annotations

import math

import numpy as np


def flax_resnet(a: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """The feature map (B, H/s, W/s, C') the hybrid's embedding conv reads."""
    a = {k: np.asarray(v, np.float64) for k, v in a.items()}
    x = _relu(_gn(_conv(images, a["conv_root/kernel"], 2), a, "gn_root"))
    x = _max_pool(x, 3, 2)
    block = 1
    while f"block{block}/unit1/conv1/kernel" in a:
        unit = 1
        while f"block{block}/unit{unit}/conv1/kernel" in a:
            p = f"block{block}/unit{unit}/"
            stride = 2 if block > 1 and unit == 1 else 1
            residual = x
            if f"{p}conv_proj/kernel" in a:
                residual = _gn(_conv(x, a[f"{p}conv_proj/kernel"], stride), a, f"{p}gn_proj")
            y = _relu(_gn(_conv(x, a[f"{p}conv1/kernel"], 1), a, f"{p}gn1"))
            y = _relu(_gn(_conv(y, a[f"{p}conv2/kernel"], stride), a, f"{p}gn2"))
            y = _gn(_conv(y, a[f"{p}conv3/kernel"], 1), a, f"{p}gn3")
            x = _relu(residual + y)
            unit += 1
        block += 1
    return x


def _standardise(w: np.ndarray) -> np.ndarray:
    w = w - w.mean(axis=(0, 1, 2))
    return w / (w.std(axis=(0, 1, 2)) + 1e-5)


def _same(size: int, k: int, s: int) -> tuple[int, int]:
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, k: int, s: int, fill: float) -> np.ndarray:
    """(B, H, W, C) → (B, H', W', k·k, C): every SAME-padded k×k window at stride s."""
    b, h, w, c = x.shape
    x = np.pad(x, ((0, 0), _same(h, k, s), _same(w, k, s), (0, 0)), constant_values=fill)
    oh, ow = math.ceil(h / s), math.ceil(w / s)
    views = [x[:, i : i + s * oh : s, j : j + s * ow : s] for i in range(k) for j in range(k)]
    return np.stack(views, axis=3)


def _conv(x: np.ndarray, kernel: np.ndarray, s: int) -> np.ndarray:
    k, _, c_in, c_out = kernel.shape  # HWIO
    w = _standardise(kernel).reshape(k * k, c_in, c_out)
    return np.einsum("bhwnc,nco->bhwo", _windows(x, k, s, 0.0), w)


def _max_pool(x: np.ndarray, k: int, s: int) -> np.ndarray:
    return _windows(x, k, s, -np.inf).max(axis=3)


def _gn(x: np.ndarray, a: dict[str, np.ndarray], name: str, groups: int = 32) -> np.ndarray:
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    normed = ((g - mean) / np.sqrt(var + 1e-6)).reshape(b, h, w, c)
    return normed * a[f"{name}/scale"].reshape(-1) + a[f"{name}/bias"].reshape(-1)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)
