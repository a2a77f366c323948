"""Model outputs → the numbers an answer carries: probabilities, top-k classes, embeddings."""

from __future__ import annotations

import base64

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """(B, K) logits → (B, K) probabilities, computed in float64 so tiny scores do not vanish."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)  # exp never overflows
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return probs


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(B, K) scores → (B, min(k, K)) class indices per image, highest first; ties: lower index
    first (a stable sort), so the same scores always answer the same order."""
    return np.argsort(-scores, axis=1, kind="stable")[:, : min(k, scores.shape[1])]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """(B, D) → rows of unit length (a zero row stays zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    unit: np.ndarray = x / np.maximum(norm, np.finfo(np.float32).tiny)
    return unit


def encode_base64(row: np.ndarray) -> str:
    """(D,) → base64 of its little-endian float32 bytes (the OpenAI embeddings API's format)."""
    return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
