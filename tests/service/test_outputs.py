"""Logits and embeddings → the numbers in an answer."""

from __future__ import annotations

import base64

import numpy as np

from service.inference.outputs import encode_base64, l2_normalize, softmax, top_k


def test_softmax_is_stable_and_sums_to_one() -> None:
    p = softmax(np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), 0.0]], np.float32))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(p[1], [0.2, 0.6, 0.2], rtol=1e-6)


def test_top_k_is_sorted_and_clamped_to_the_class_count() -> None:
    logits = np.array([[0.0, 3.0, 1.0], [2.0, 0.0, 2.0]], np.float32)
    first, second = top_k(logits, 5)
    assert first.tolist() == [1, 2, 0]
    assert second.tolist() == [0, 2, 1]  # tie: lower index first
    assert top_k(logits, 1).shape == (2, 1)


def test_l2_normalize_gives_unit_rows_and_leaves_zero_rows_alone() -> None:
    x = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], np.float32))
    np.testing.assert_allclose(x, [[0.6, 0.8], [0.0, 0.0]])


def test_base64_is_little_endian_float32() -> None:
    row = np.array([1.5, -2.0, 3.25], np.float32)
    decoded = np.frombuffer(base64.b64decode(encode_base64(row)), "<f4")
    np.testing.assert_array_equal(decoded, row)
