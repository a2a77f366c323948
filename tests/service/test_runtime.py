"""The runtime's one readiness state, on a real bundle and real ONNX Runtime sessions."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from engines import SlowToWarm, WarmUpFails

from service.metrics import Metrics
from service.runtime import Runtime
from service.settings import Settings
from service.workers import Peers


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


@pytest.fixture
def settings(tiny_bundle: Path) -> Settings:
    return Settings(bundle=tiny_bundle, providers="cpu", max_batch_size=2, drain_timeout_s=5)


def test_phases_run_starting_warming_ready_then_stopped(settings: Settings) -> None:
    engine = SlowToWarm(settings.bundle)
    runtime = Runtime(settings, Metrics(), engine)
    assert (runtime.phase, runtime.ready, runtime.alive) == ("starting", False, True)
    runtime.start()
    assert runtime.phase == "warming" and runtime.status().startswith("warming up: 0 of 4")
    engine.release.set()
    wait_for(lambda: runtime.ready)
    assert runtime.status() == "ready" and runtime.batcher.alive
    runtime.close()
    assert (runtime.phase, runtime.ready, runtime.alive) == ("stopped", False, True)
    assert runtime.status() == "the service is shutting down"


def test_a_failed_warm_up_is_final_and_says_restart(settings: Settings) -> None:
    engine = WarmUpFails(settings.bundle)
    runtime = Runtime(settings, Metrics(), engine)
    runtime.start()
    wait_for(lambda: runtime.phase == "failed")
    assert not runtime.alive and not runtime.ready
    assert runtime.status() == "warm-up failed (see the log); this instance needs a restart"
    runtime.close()
    assert runtime.phase == "failed"  # closing does not make a failed instance look healthy


def test_with_workers_ready_means_every_worker_is_ready(settings: Settings) -> None:
    flags = bytearray(2)  # what the supervisor shares between two workers, in plain memory here
    runtime = Runtime(settings, Metrics(), peers=Peers(flags, 0))
    runtime.start()
    wait_for(lambda: runtime.phase == "ready")
    assert flags == bytearray([1, 0])  # this worker said so to the other
    assert not runtime.ready and runtime.status() == "another worker of this instance is not ready"
    flags[1] = 1  # the other one is warm too
    assert runtime.ready and runtime.status() == "ready"
    runtime.begin_drain()  # SIGTERM: every worker's /readyz turns 503, this one's flag first
    assert flags == bytearray([0, 1]) and not runtime.ready
    runtime.close()
