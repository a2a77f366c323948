"""The engine process, one per device: the ONNX Runtime sessions, the batcher and the decode stage,
serving every front of the instance over the local channel (service/channel/).

    starting ──▶ warming ──every graph × batch size ran──▶ ready ──SIGTERM──▶ draining ──▶ stopped
                    └── warm-up raised ──▶ failed ◀── the batch worker died

It publishes its phase, the images it holds and its warm-up progress to the instance's shared
state (service/state.py), which the fronts read. On SIGTERM (the supervisor sends it once every
front has drained, or the kernel does when the supervisor dies) it serves on until no front is
connected, runs what is queued (at most drain_timeout_s) and exits: 0 if nothing was left. Ctrl-C
in a terminal reaches every process of the group: the engine ignores it and waits to be told.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from service.channel.engine_side import ChannelServer
from service.inference.batcher import Batcher
from service.inference.engine import (
    CUDA,
    Engine,
    EngineError,
    batch_candidates,
    choose_batch_size,
    usable_cores,
)
from service.inference.engine_io import CudaOptions
from service.inference.gpu import device_decoding_missing
from service.inference.pipeline import Pipeline
from service.instance import configure_logging, die_with_parent
from service.metrics import Metrics
from service.os_names import ONNXRUNTIME, name_thread, threads_started_as
from service.settings import Settings, invalid_setting, memory_budgets
from service.state import SharedState
from vit_core.bundle import BundleError, BundleManifest, load_bundle
from vit_core.images import Preprocessor
from vit_core.memory import MemoryBudget, memory_limit, trim, tune_allocator

if TYPE_CHECKING:
    from service.inference.device_decode import DeviceDecoder

log = logging.getLogger(__name__)

MIN_DECODE_THREADS = 4


def open_engine(settings: Settings, manifest: BundleManifest) -> Engine:
    """The sessions as the settings ask: providers, batch buffer rows, CUDA provider options, and
    the buffer on the GPU when images will be decoded there."""
    return Engine(
        settings.bundle,
        manifest,
        settings.providers,
        max_batch_size=settings.max_batch_size,
        cuda=CudaOptions.from_settings(settings),
        device_rows=settings.decode == "device"
        or (settings.decode == "auto" and not device_decoding_missing()),
        lanes=settings.engine_lanes,
    )


def decode_threads(settings: Settings) -> int:
    """VIT_PREPROCESS_THREADS, or unset: one per usable core, at least MIN_DECODE_THREADS. On a
    CPU the engine runs a lane per core, and a cheap model or large photos (a 12 MP JPEG is ~40 ms
    of decode and resize at 1/8 here) need decodes at that rate: four threads would cap a 16-core
    host at a quarter of it. Four at least: a decode waiting for memory (VIT_DECODE_MEMORY_BYTES)
    or a slow PNG must not leave a small machine's cores without work."""
    return settings.preprocess_threads or max(MIN_DECODE_THREADS, usable_cores())


def max_wait_ms(settings: Settings, engine: Engine) -> float:
    """VIT_MAX_WAIT_MS, or unset: 5 ms on a GPU, where a fuller batch costs little more than a
    lone image, and none on a CPU, where it costs as much per image and only adds the wait."""
    if settings.max_wait_ms is not None:
        return settings.max_wait_ms
    return 5.0 if engine.provider == CUDA else 0.0


def open_decoder(settings: Settings, engine: Engine) -> DeviceDecoder | None:
    """The device decode stage, placed where the engine runs, or None for the host transform."""
    missing = device_decoding_missing()
    on_cuda = engine.provider == CUDA
    if settings.decode == "device" and missing:
        raise EngineError(f"VIT_DECODE=device, but {missing}", "decode")
    if settings.decode == "host" or (settings.decode == "auto" and (missing or not on_cuda)):
        if settings.decode == "auto" and on_cuda and missing:
            log.warning("decoding images on the host: %s", missing)
        return None
    from service.inference.device_decode import DeviceDecoder

    m = engine.manifest
    return DeviceDecoder(m.preprocess, m.image_size, "cuda" if on_cuda else "cpu")


class EngineHost:
    """The engine's parts, wired: `serve` runs them until told to stop."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        metrics: Metrics,
        state: SharedState,
        decoder: DeviceDecoder | None = None,
    ) -> None:
        self.settings, self.engine, self.metrics, self.state = settings, engine, metrics, state
        m = engine.manifest
        self.batcher = Batcher(
            engine.run_rows,
            graphs=m.graphs,
            max_batch_size=settings.max_batch_size or engine.capacity,  # until chosen
            max_wait_s=max_wait_ms(settings, engine) / 1000,
            max_queue_images=settings.max_queue_images,
            metrics=metrics,
            lanes=len(engine.lanes),
            on_death=lambda: self._fail("the batch worker has stopped"),
            on_held=self._publish_held,
        )
        self._executor = ThreadPoolExecutor(decode_threads(settings), "decode", name_thread)
        decode_budget, _ = memory_budgets(settings, memory_limit())
        preprocessor = Preprocessor(
            m.preprocess,
            m.image_size,
            settings.max_image_pixels,
            m.pixels,  # uint8 rows for graphs that normalise themselves
            max_bytes=settings.max_image_bytes,
            memory=MemoryBudget(decode_budget),
            memory_wait_s=settings.request_timeout_s,
            scaled_decode=not settings.exact_decode,
        )
        self.pipeline = Pipeline(preprocessor, self.batcher, self._executor, metrics, decoder)
        self.decode = f"device ({decoder.placement})" if decoder else "host"
        row = (tuple(m.pixels.shape(m.image_hw)), engine.input_dtype)
        self.channel = ChannelServer(self.pipeline, row, self.info)
        self.measured: dict[int, float] = {}  # images/s by batch size, when one was chosen
        self._stop = threading.Event()  # ends the warm-up early
        self._warm_thread = threading.Thread(target=self._warm_up, name="warm-up", daemon=True)

    def info(self) -> dict[str, Any]:
        """What GET /model shows of how the engine runs: its providers, its lanes (batches in
        flight at once), its batch size, pinned by the settings or chosen from the images/s
        measured at each size with every lane running, and how long a batch waits for company."""
        return {
            "providers": self.engine.providers,
            "decode": self.decode,
            "lanes": len(self.engine.lanes),
            "max_batch_size": self.batcher.max_batch_size,
            "max_wait_ms": self.batcher.max_wait_s * 1000,
            "batch_size_measured": {
                str(size): round(rate, 1) for size, rate in self.measured.items()
            },
        }

    async def serve(self, address: str, stop: asyncio.Event) -> int:
        """Listen on the Unix socket `address`, warm up, serve until `stop`, then drain; the
        exit code (0: everything accepted was answered)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(self.channel.protocol, address)
        self.state.phase = "warming"
        self._warm_thread.start()
        m = self.engine.manifest
        log.info(
            "engine: %s v%s (%s, %s) from %s; warming up", m.name, m.version, m.precision,
            self.engine.provider, self.settings.bundle,
        )  # fmt: skip
        await stop.wait()
        return await self._drain(server)

    async def _drain(self, server: asyncio.AbstractServer) -> int:
        """Serve the fronts still draining (not new ones), then run what is queued and stop."""
        if self.state.phase != "failed":
            self.state.phase = "draining"
        server.close()  # no new fronts; the connected ones keep their channel
        timeout = self.settings.drain_timeout_s + self.settings.drain_delay_s
        try:
            await asyncio.wait_for(self.channel.idle.wait(), timeout)
        except TimeoutError:
            log.warning("engine: fronts still connected after %.0f s; stopping", timeout)
        self._stop.set()
        await asyncio.to_thread(self._warm_thread.join, timeout)
        left = await asyncio.to_thread(self.batcher.close, self.settings.drain_timeout_s)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.channel.close()
        failed = self.state.phase == "failed"
        if not failed:
            self.state.phase = "stopped"
        return 0 if left == 0 and not failed else 1

    def _warm_up(self) -> None:
        """The batch size (measured and chosen, unless the settings pin it), then every graph at
        every batch size up to it, then the batcher opens: no request pays for a first-call
        allocation or a CUDA kernel choice."""
        name_thread()
        try:
            size = self.settings.max_batch_size or self._choose_batch_size()
            self.batcher.max_batch_size = size
            self.metrics.max_batch_size.set(size)
            self.state.warmed(0, len(self.engine.warm_up_steps(size)))
            if self.engine.warm_up(size, self._stop, self._progress):
                # Measuring and warming every lane at once left the arena's peak in the heap:
                # handed back now, /readyz reads the steady state (demo model, two lanes: 943
                # MiB at /readyz without this, 527 after the first requests).
                trim()
                self.batcher.start()
                if self.state.phase == "warming":
                    self.state.phase = "ready"
                    log.info("engine: ready")
        except Exception:
            log.exception("warm-up failed; the instance will not become ready")
            self._fail("warm-up failed (see the log)")

    def _choose_batch_size(self) -> int:
        limit = self.engine.capacity
        self.measured = self.engine.measure(batch_candidates(limit), self._stop)
        if not self.measured:  # stopped before the first size was measured
            return 1
        size = choose_batch_size(self.measured)
        rates = ", ".join(f"{b}: {r:.0f}" for b, r in self.measured.items())
        log.info("engine: batch size %d chosen (images/s by batch size: %s)", size, rates)
        return size

    def _progress(self, done: int, total: int) -> None:
        """Said at each quarter: a first warm-up can take tens of seconds on a small CPU."""
        self.state.warmed(done, total)
        if done * 4 // total > (done - 1) * 4 // total:
            log.info("warming up: %d of %d graph × batch-size runs", done, total)

    def _publish_held(self, images: int) -> None:
        self.state.held = images

    def _fail(self, reason: str) -> None:
        self.state.fail(reason)


def engine_main(settings: Settings, address: str, state: SharedState) -> int:
    """The engine process (spawned by service/instance.py): exit code 2 for a provider that
    cannot be had (the message names the setting), else serve's."""
    die_with_parent()
    configure_logging(settings)
    state.started("engine", os.getpid())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the supervisor says when to stop
    try:  # a graph that does not take or answer what model.json says; a provider not to be had
        with threads_started_as(ONNXRUNTIME):  # the sessions' thread pools, in top -H
            engine = open_engine(settings, load_bundle(settings.bundle))
            decoder = open_decoder(settings, engine)
    except (BundleError, EngineError) as e:
        setting = e.setting if isinstance(e, EngineError) else "bundle"
        print(f"vit-serve: {invalid_setting(setting, e)}", file=sys.stderr)
        return 2
    tune_allocator()  # before the threads that decode start their arenas
    host = EngineHost(settings, engine, Metrics(multiprocess=True), state, decoder)
    return asyncio.run(_serve_until_sigterm(host, address))


async def _serve_until_sigterm(host: EngineHost, address: str) -> int:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    return await host.serve(address, stop)
