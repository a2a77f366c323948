"""ONNX Runtime sessions over a real exported bundle: outputs, providers, warm-up."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.bundle import (
    EMBEDDING,
    EXPLAIN,
    FAST,
    LOGITS,
    OUTPUTS,
    ROLLOUT,
    BundleManifest,
    load_bundle,
)
from service.engine import CPU, CUDA, Engine, EngineError


@pytest.fixture(scope="module")
def manifest(tiny_bundle: Path) -> BundleManifest:
    return load_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def engine(tiny_bundle: Path, manifest: BundleManifest) -> Engine:
    return Engine(tiny_bundle, manifest, "cpu")


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def test_fast_and_explain_outputs_have_the_manifest_shapes(engine: Engine) -> None:
    fast = engine.run(FAST, pixels(3))
    assert fast[LOGITS].shape == (3, 4) and fast[EMBEDDING].shape == (3, 32)
    explain = engine.run(EXPLAIN, pixels(3))
    assert explain[ROLLOUT].shape == (3, 16)
    assert sorted(fast) == sorted(OUTPUTS[FAST]) and sorted(explain) == sorted(OUTPUTS[EXPLAIN])
    assert all(v.dtype == np.float32 for v in (*fast.values(), *explain.values()))
    np.testing.assert_allclose(explain[LOGITS], fast[LOGITS], rtol=1e-4, atol=1e-5)


def test_a_row_does_not_depend_on_its_batch_neighbours(engine: Engine) -> None:
    batch = pixels(5)
    together = engine.run(FAST, batch)[LOGITS]
    alone = np.concatenate([engine.run(FAST, batch[i : i + 1])[LOGITS] for i in range(5)])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


def test_cpu_means_cpu(engine: Engine) -> None:
    assert engine.providers == [CPU] and engine.provider == CPU


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_auto_falls_back_to_cpu_with_one_log_line(
    tiny_bundle: Path, manifest: BundleManifest, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.engine"):
        engine = Engine(tiny_bundle, manifest, "auto")
    assert engine.provider == CPU
    assert [r.getMessage() for r in caplog.records] == [
        "CUDA is not available; running on the CPU (CPUExecutionProvider)"
    ]


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_cuda_fails_hard_without_cuda(tiny_bundle: Path, manifest: BundleManifest) -> None:
    with pytest.raises(EngineError, match="VIT_PROVIDERS=cuda"):
        Engine(tiny_bundle, manifest, "cuda")


class Recording(Engine):
    """The real engine, remembering every batch shape it ran."""

    def __init__(self, folder: Path, manifest: BundleManifest) -> None:
        super().__init__(folder, manifest, "cpu")
        self.calls: list[tuple[str, int]] = []

    def run(self, graph: str, pixels: np.ndarray) -> dict[str, np.ndarray]:
        self.calls.append((graph, len(pixels)))
        return super().run(graph, pixels)


def test_warm_up_runs_every_graph_at_every_batch_size(
    tiny_bundle: Path, manifest: BundleManifest
) -> None:
    engine = Recording(tiny_bundle, manifest)
    steps: list[int] = []
    assert engine.warm_up(5, threading.Event(), lambda done, total: steps.append(total - done))
    assert sorted(engine.calls) == sorted((g, b) for g in (FAST, EXPLAIN) for b in range(1, 6))
    assert engine.calls[0] == (FAST, 5)  # largest first
    assert steps[-1] == 0


def test_warm_up_stops_when_asked(tiny_bundle: Path, manifest: BundleManifest) -> None:
    engine = Recording(tiny_bundle, manifest)
    stop = threading.Event()
    stop.set()
    assert not engine.warm_up(5, stop) and engine.calls == []
