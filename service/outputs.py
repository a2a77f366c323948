"""Model outputs → the numbers an answer carries: top-k probabilities, embeddings."""

from __future__ import annotations

import base64

import numpy as np

from service.schemas import Prediction


def softmax(logits: np.ndarray) -> np.ndarray:
    """(B, K) logits → (B, K) probabilities, computed in float64 so tiny scores do not vanish."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)  # exp never overflows
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return probs


def top_k(logits: np.ndarray, k: int, labels: list[str]) -> list[list[Prediction]]:
    """Per image, the k most probable classes, most probable first (ties: lower index first)."""
    probs = softmax(logits)
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (B, k)
    return [
        [Prediction(label=labels[i], index=int(i), score=float(p[i])) for i in row]
        for p, row in zip(probs, order, strict=True)
    ]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """(B, D) → rows of unit length (a zero row stays zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    unit: np.ndarray = x / np.maximum(norm, np.finfo(np.float32).tiny)
    return unit


def encode_base64(row: np.ndarray) -> str:
    """(D,) → base64 of its little-endian float32 bytes (the OpenAI embeddings API's format)."""
    return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
