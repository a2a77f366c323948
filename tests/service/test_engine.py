"""ONNX Runtime sessions over a real exported bundle: outputs, providers, warm-up."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.inference.engine import (
    CPU,
    CUDA,
    Engine,
    EngineError,
    batch_candidates,
    choose_batch_size,
    default_cpu_lanes,
    every_core_threads,
    usable_cores,
)
from service.inference.engine_io import CudaOptions, HostBuffer
from vit_core.bundle import (
    EMBEDDING,
    EXPLAIN,
    FAST,
    LOGITS,
    OUTPUTS,
    ROLLOUT,
    BundleManifest,
    load_bundle,
)
from vit_core.images import normalise


@pytest.fixture(scope="module")
def manifest(tiny_bundle: Path) -> BundleManifest:
    return load_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def engine(tiny_bundle: Path, manifest: BundleManifest) -> Engine:
    return Engine(tiny_bundle, manifest, "cpu")


def pixels(n: int, seed: int = 0) -> np.ndarray:
    """(n, 32, 32, 3) uint8: decoded, resized pixels, as the tiny bundle's graphs take them."""
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


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


def test_a_bundle_of_schema_1_answers_as_the_uint8_one_from_host_normalised_pixels(
    engine: Engine, legacy_bundle: Path
) -> None:
    legacy = Engine(legacy_bundle, load_bundle(legacy_bundle), "cpu")
    assert legacy.host_rows(0).shape == (16, 3, 32, 32) and legacy.input_dtype == np.float32
    x = pixels(4, seed=3)
    floats = np.stack([normalise(image, legacy.manifest.preprocess) for image in x])  # (4, 3, S, S)
    np.testing.assert_allclose(
        legacy.run(FAST, floats)[LOGITS], engine.run(FAST, x)[LOGITS], rtol=1e-4, atol=1e-5
    )


def test_the_batch_buffer_is_the_graphs_input_and_runs_where_it_lies(engine: Engine) -> None:
    buffer = engine.host_rows(0)
    assert buffer.shape == (16, 32, 32, 3) and buffer.dtype == np.uint8  # AUTO_LIMIT rows on a CPU
    assert not engine.lanes[0].buffer.pinned  # pinned memory is for the CUDA provider
    x = pixels(3, seed=4)
    buffer[:3] = x
    np.testing.assert_array_equal(engine.run(FAST, buffer[:3])[LOGITS], engine.run(FAST, x)[LOGITS])


def test_a_batch_of_rows_is_written_into_the_buffer_and_run_from_there(engine: Engine) -> None:
    buffer, x = engine.host_rows(0), pixels(3, seed=5)
    buffer[3] = 7  # past the batch: left alone
    answer = engine.run_rows(FAST, list(x))
    np.testing.assert_array_equal(buffer[:3], x)  # the rows where the graph read them
    assert (buffer[3] == 7).all()
    np.testing.assert_array_equal(answer[LOGITS], engine.run(FAST, x)[LOGITS])
    with pytest.raises(ValueError, match="a batch of 17 for a buffer of 16 rows"):
        engine.run_rows(FAST, [x[0]] * 17)


def test_a_cuda_buffer_without_pinned_memory_says_so_and_still_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.inference.engine_io"):
        buffer = HostBuffer(4, (8, 8, 3), np.dtype(np.uint8), cuda=True)
    assert not buffer.pinned and buffer.array.shape == (4, 8, 8, 3)
    if CUDA not in ort.get_available_providers():
        assert "no pinned host memory" in caplog.text


def test_cuda_options_keep_fp32_parity_unless_told() -> None:
    default = CudaOptions().provider_options()
    assert default["use_tf32"] == "0" and default["enable_cuda_graph"] == "0"
    assert default["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert default["arena_extend_strategy"] == "kSameAsRequested"
    told = CudaOptions("HEURISTIC", tf32=True, cuda_graphs=True).provider_options()
    assert (told["use_tf32"], told["enable_cuda_graph"]) == ("1", "1")


def test_cpu_means_cpu(engine: Engine) -> None:
    assert engine.providers == [CPU] and engine.provider == CPU


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_auto_falls_back_to_cpu_with_one_log_line(
    tiny_bundle: Path, manifest: BundleManifest, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.inference.engine"):
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
    """The real engine, remembering every batch shape it ran and on which lane."""

    def __init__(self, folder: Path, manifest: BundleManifest, lanes: int = 1) -> None:
        super().__init__(folder, manifest, "cpu", lanes=lanes)
        self.calls: list[tuple[str, int, int, bool]] = []

    def run(
        self, graph: str, pixels: np.ndarray, lane: int = 0, alone: bool = True
    ) -> dict[str, np.ndarray]:
        self.calls.append((graph, len(pixels), lane, alone))
        return super().run(graph, pixels, lane, alone)


def test_warm_up_runs_every_graph_at_every_batch_size_then_every_lane_at_once(
    tiny_bundle: Path, manifest: BundleManifest
) -> None:
    engine = Recording(tiny_bundle, manifest, lanes=2)
    steps: list[int] = []
    assert engine.warm_up(5, threading.Event(), lambda done, total: steps.append(total - done))
    # both sessions of each graph: every core (alone), one core (beside others)
    sizes = [(g, b, 0, a) for g in (FAST, EXPLAIN) for a in (True, False) for b in range(5, 0, -1)]
    assert engine.calls[: len(sizes)] == sizes  # largest first
    at_once = sorted(engine.calls[len(sizes) :])
    assert at_once == [(g, 5, n, False) for g in (EXPLAIN, FAST) for n in (0, 1)]
    assert steps[-1] == 0


def test_lanes_run_batches_at_once_each_from_its_own_buffer(
    tiny_bundle: Path, manifest: BundleManifest
) -> None:
    engine = Engine(tiny_bundle, manifest, "cpu", lanes=3)
    buffers = {engine.host_rows(n).ctypes.data for n in range(3)}
    assert len(engine.lanes) == 3 and len(buffers) == 3
    batches = [pixels(4, seed=n) for n in range(3)]
    alone = [engine.run(FAST, x)[LOGITS] for x in batches]
    for _ in range(5):  # every lane at once, each writing and reading its own rows
        with ThreadPoolExecutor(3) as pool:
            runs = [(FAST, list(batches[n]), n) for n in range(3)]
            together = list(pool.map(lambda run: engine.run_rows(*run), runs))
        for n in range(3):
            np.testing.assert_array_equal(together[n][LOGITS], alone[n])
            np.testing.assert_array_equal(engine.host_rows(n)[:4], batches[n])
    assert len(Engine(tiny_bundle, manifest, "cpu").lanes) == default_cpu_lanes()  # the default


def test_on_a_cpu_a_batch_alone_takes_every_core_and_one_beside_others_takes_one(
    tiny_bundle: Path, manifest: BundleManifest
) -> None:
    """Two sessions per graph when lanes share a CPU: ORT's default threads for a batch alone,
    one intra-op thread for batches beside others (engine.py: why); the same answers from both."""
    engine = Engine(tiny_bundle, manifest, "cpu", lanes=2)
    assert set(engine.one_core) == {FAST, EXPLAIN}
    for role, session in engine.sessions.items():
        # ORT's own count (0), or the usable cores where a quota or affinity allows fewer
        assert session.get_session_options().intra_op_num_threads == every_core_threads()
        assert engine.one_core[role].get_session_options().intra_op_num_threads == 1
    x = pixels(3)
    for lane in range(2):
        alone, beside = engine.run(FAST, x, lane), engine.run(FAST, x, lane, alone=False)
        np.testing.assert_allclose(beside[LOGITS], alone[LOGITS], rtol=1e-5, atol=1e-6)
    one_lane = Engine(tiny_bundle, manifest, "cpu", lanes=1)
    assert one_lane.one_core == {}  # nothing runs beside a lone lane: no second session
    assert one_lane.lanes[0].runner(FAST, False) is one_lane.lanes[0].runner(FAST, True)


def test_only_a_session_that_runs_batches_alone_spins_and_only_until_its_run_ends(
    tiny_bundle: Path, manifest: BundleManifest
) -> None:
    """Spinning threads would take the cores other batches' decodes need (engine.py, _session)."""

    def config(session: ort.InferenceSession, key: str) -> str:
        return session.get_session_options().get_session_config_entry(key)

    lanes, one_lane = (Engine(tiny_bundle, manifest, "cpu", lanes=n) for n in (2, 1))
    for role in (FAST, EXPLAIN):
        assert config(lanes.sessions[role], "session.intra_op.allow_spinning") == "1"
        assert config(lanes.one_core[role], "session.intra_op.allow_spinning") == "0"
        assert config(one_lane.sessions[role], "session.intra_op.allow_spinning") == "0"
        for session in (lanes.sessions[role], lanes.one_core[role], one_lane.sessions[role]):
            assert config(session, "session.force_spinning_stop") == "1"


@pytest.mark.parametrize(
    ("cpu_max", "cores"),
    [("150000 100000", 2), ("50000 100000", 1), ("max 100000", None), (None, None)],
    ids=["1.5 cores", "half a core", "no quota", "no cgroup v2"],
)
def test_the_usable_cores_are_the_affinity_bounded_by_a_cgroup_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str | None, cores: int | None
) -> None:
    """What the engine counts its lanes from when VIT_ENGINE_LANES is unset: a container's
    --cpus 1.5 is 2 lanes, whatever the host has (the cgroup file as the kernel writes it)."""
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max + "\n")
    monkeypatch.setattr("service.inference.engine.CPU_MAX", str(path))
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores() == (affinity if cores is None else min(cores, affinity))
    # a batch alone: one thread per usable core when they are fewer than the machine's, else
    # ONNX Runtime's own count (0)
    threads = every_core_threads()
    if cpu_max == "50000 100000" and (os.cpu_count() or 1) > 1:
        assert threads == 1  # half a core of a bigger machine: not one thread per core
    if cores is None and affinity == os.cpu_count():
        assert threads == 0  # nothing restricts the process


def test_warm_up_stops_when_asked(tiny_bundle: Path, manifest: BundleManifest) -> None:
    engine = Recording(tiny_bundle, manifest)
    stop = threading.Event()
    stop.set()
    assert not engine.warm_up(5, stop) and engine.calls == []


def test_batch_sizes_worth_measuring_are_powers_of_two_up_to_the_limit() -> None:
    assert batch_candidates(1) == [1]
    assert batch_candidates(64) == [1, 2, 4, 8, 16, 32, 64]
    assert batch_candidates(48) == [1, 2, 4, 8, 16, 32, 48]


def test_the_chosen_batch_size_is_the_smallest_within_reach_of_the_best() -> None:
    cpu_vit_ti = {1: 36.0, 2: 45.0, 4: 52.0, 8: 58.0, 16: 56.0, 32: 52.0}  # issue 21's figures
    assert choose_batch_size(cpu_vit_ti) == 8
    gpu_like = {1: 300.0, 8: 2400.0, 32: 4000.0, 64: 4900.0, 128: 5100.0, 256: 5270.0}
    assert choose_batch_size(gpu_like) == 128  # 5,100 is within 5 % of 5,270
    assert choose_batch_size({1: 10.0}) == 1


def test_measuring_runs_the_real_graph_and_gives_the_arena_back(tiny_bundle: Path) -> None:
    engine = Engine(tiny_bundle, load_bundle(tiny_bundle), "cpu", max_batch_size=8)
    measured = engine.measure(batch_candidates(8), threading.Event(), seconds=0.05)
    assert list(measured)[:2] == [1, 2] and set(measured) <= {1, 2, 4, 8}
    assert all(rate > 0 for rate in measured.values())
    stopped = threading.Event()
    stopped.set()
    assert engine.measure([1, 2], stopped) == {}  # a stop (SIGTERM) ends it at once
