"""The service at run time: one typed object holding what a request needs, and the one readiness
state every health answer is read from.

    starting ──start()──▶ warming ──every graph × batch size ran──▶ ready ──SIGTERM──▶ draining
        │                    │                                        │                  │
        │                    └── warm-up raised ──▶ failed ◀── the batch worker died     ▼
        └── (the bundle or the sessions could not be opened: nothing to serve)        stopped

`failed` is final: /healthz turns 503 so the orchestrator restarts the instance. Every other
phase but `ready` makes /readyz 503 with the reason, so a load balancer sends nothing here.
With several workers, each publishes whether it is ready to the others (`Peers`), and /readyz
says ready only when every one is: whichever worker a probe reaches, the answer is the instance's.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from service.edge.inputs import BodyBudget
from service.inference.batcher import Batcher
from service.inference.engine import Engine
from service.inference.engine_io import CudaOptions
from service.inference.pipeline import Pipeline
from service.metrics import Metrics
from service.settings import Settings, memory_budgets
from service.workers import Peers
from vit_core.bundle import BundleManifest, load_bundle
from vit_core.images import Preprocessor
from vit_core.memory import MemoryBudget, memory_limit

log = logging.getLogger(__name__)

Phase = Literal["starting", "warming", "ready", "draining", "stopped", "failed"]


def open_engine(settings: Settings, manifest: BundleManifest) -> Engine:
    """The sessions as the settings ask: providers, batch buffer rows, CUDA provider options."""
    return Engine(
        settings.bundle,
        manifest,
        settings.providers,
        max_batch_size=settings.max_batch_size,
        cuda=CudaOptions.from_settings(settings),
    )


class Runtime:
    """Built in the app's lifespan; `start` warms up in the background, `close` drains."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        engine: Engine | None = None,
        peers: Peers | None = None,
    ) -> None:
        self.settings, self.metrics, self._peers = settings, metrics, peers
        self.manifest: BundleManifest = engine.manifest if engine else load_bundle(settings.bundle)
        self.engine = engine or open_engine(settings, self.manifest)
        self.batcher = Batcher(
            self.engine.run,
            graphs=self.manifest.graphs,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue_images=settings.max_queue_images,
            metrics=metrics,
            buffer=self.engine.batch_buffer,
            on_death=lambda: self._fail("the batch worker has stopped"),
        )
        self._executor = ThreadPoolExecutor(settings.preprocess_threads, "preprocess")
        decode_budget, body_budget = memory_budgets(settings, memory_limit())
        self.bodies = BodyBudget(body_budget)
        preprocessor = Preprocessor(
            self.manifest.preprocess,
            self.manifest.image_size,
            settings.max_image_pixels,
            self.manifest.pixels,  # uint8 rows for graphs that normalise themselves
            max_bytes=settings.max_image_bytes,
            memory=MemoryBudget(decode_budget),
            memory_wait_s=settings.request_timeout_s,
            scaled_decode=not settings.exact_decode,
        )
        self.pipeline = Pipeline(preprocessor, self.batcher, self._executor, metrics)
        self._phase: Phase = "starting"
        self._reason = ""  # why `failed`
        self._warmed = 0  # graph × batch-size runs done
        self.drained = False  # set by close: every accepted request was answered
        self._stop = threading.Event()
        self._warm_thread = threading.Thread(target=self._warm_up, name="warm-up", daemon=True)
        m = self.manifest
        metrics.model_info.labels(m.name, m.version, self.engine.provider, m.precision).set(1)

    # -- readiness --------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @phase.setter
    def phase(self, phase: Phase) -> None:
        self._phase = phase
        if self._peers is not None:
            self._peers.publish(phase == "ready")

    @property
    def ready(self) -> bool:
        return self.phase == "ready" and (self._peers is None or self._peers.all_ready())

    @property
    def alive(self) -> bool:
        """False only when this instance cannot recover: it needs a restart."""
        return self.phase != "failed"

    def status(self) -> str:
        """Why the instance is not ready (or "ready")."""
        total = len(self.engine.sessions) * self.settings.max_batch_size
        return {
            "starting": "the service is starting",
            "warming": f"warming up: {self._warmed} of {total} graph × batch-size runs",
            "ready": "ready" if self.ready else "another worker of this instance is not ready",
            "draining": "the service is shutting down",
            "stopped": "the service is shutting down",
            "failed": f"{self._reason}; this instance needs a restart",
        }[self.phase]

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.phase = "warming"
        self._warm_thread.start()
        m = self.manifest
        log.info(
            "loaded %s v%s (%s, %s) from %s; warming up: /readyz says 503 until it is done",
            m.name, m.version, m.precision, self.engine.provider, self.settings.bundle,
        )  # fmt: skip

    def begin_drain(self) -> None:
        """Say not-ready from now on (SIGTERM); work already accepted or still arriving runs."""
        if self.phase != "failed":
            self.phase = "draining"

    def close(self) -> None:
        """Stop warming, run what is queued (at most drain_timeout_s), then stop; `drained`
        says whether everything accepted was answered."""
        self.begin_drain()
        timeout = self.settings.drain_timeout_s
        self._stop.set()
        self._warm_thread.join(timeout)
        left = self.batcher.close(timeout=timeout)
        self.drained = left == 0 and self.phase != "failed"
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.phase != "failed":
            self.phase = "stopped"

    def _warm_up(self) -> None:
        """Every graph at every batch size, then the batcher opens: no request pays for a
        first-call allocation or a CUDA kernel choice."""
        try:
            if self.engine.warm_up(self.settings.max_batch_size, self._stop, self._progress):
                self.batcher.start()
                if self.phase == "warming":
                    self.phase = "ready"
                    log.info("ready: %s answers on %s", self.manifest.name, self.settings.url)
        except Exception:
            log.exception("warm-up failed; the service will not become ready")
            self._fail("warm-up failed (see the log)")

    def _progress(self, done: int, total: int) -> None:
        """Said at each quarter: a first warm-up can take tens of seconds on a small CPU."""
        self._warmed = done
        if done * 4 // total > (done - 1) * 4 // total:
            log.info("warming up: %d of %d graph × batch-size runs", done, total)

    def _fail(self, reason: str) -> None:
        self._reason, self.phase = reason, "failed"
