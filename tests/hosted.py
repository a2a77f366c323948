"""The instance's two halves in this process, for tests that build the app themselves: the real
engine server (service/engine_process.EngineHost) on a real Unix socket, run in a thread, and a
front's Runtime connected to it over the real channel. The seam is the Engine: a test may bring
its own (one that fails, or waits at a gate); everything between HTTP and ONNX Runtime is the
code `vit-serve` runs, only hosted in threads instead of processes."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from service.app import create_app
from service.engine_process import EngineHost, open_decoder, open_engine
from service.inference.engine import Engine
from service.metrics import Metrics
from service.runtime import Runtime
from service.settings import Settings
from service.state import SharedState
from vit_core.bundle import load_bundle


@dataclass
class Hosted:
    address: str
    state: SharedState
    metrics: Metrics
    host: EngineHost

    def runtime(self, settings: Settings, index: int = 0) -> Runtime:
        """A front's runtime on this engine (connected by the app's lifespan)."""
        manifest = load_bundle(settings.bundle)
        return Runtime(settings, self.metrics, manifest, self.state, self.address, index)


@contextmanager
def engine_thread(
    settings: Settings, engine: Engine | None = None, fronts: int = 1
) -> Iterator[Hosted]:
    """The engine server on a fresh socket until the block ends; then it drains and stops."""
    engine = engine or open_engine(settings, load_bundle(settings.bundle))
    state, metrics = SharedState(fronts), Metrics()
    host = EngineHost(settings, engine, metrics, state, open_decoder(settings, engine))
    with tempfile.TemporaryDirectory(prefix="vit-test-engine-") as folder:
        address = str(Path(folder) / "engine.sock")
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        thread = threading.Thread(
            target=loop.run_until_complete, args=(host.serve(address, stop),), daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 30
        while state.phase == "starting":
            assert time.monotonic() < deadline and thread.is_alive(), "the engine did not start"
            time.sleep(0.01)
        try:
            yield Hosted(address, state, metrics, host)
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(60)
            loop.close()


@contextmanager
def local_app(settings: Settings, engine: Engine | None = None) -> Iterator[FastAPI]:
    """The app of one front over an engine in a thread: what TestClient or uvicorn runs."""
    with engine_thread(settings, engine) as hosted:
        yield create_app(settings, hosted.runtime(settings))
