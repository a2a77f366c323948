"""Warm-up in the background: every graph at every batch size, then the batcher opens.

The server answers /healthz at once; /readyz says 200 only after this finished, so no request
pays for a first-call allocation or a CUDA kernel choice.
"""

from __future__ import annotations

import logging
import threading

from service.batcher import Batcher
from service.engine import Engine

log = logging.getLogger(__name__)


class Warmup:
    def __init__(self, engine: Engine, batcher: Batcher, max_batch_size: int) -> None:
        self._engine, self._batcher, self._max_batch_size = engine, batcher, max_batch_size
        self.done_steps = 0
        self.total_steps = len(engine.sessions) * max_batch_size
        self.failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="warm-up", daemon=True)

    def status(self) -> str:
        if self.failed:
            return "warm-up failed (see the log); this instance needs a restart"
        return f"warming up: {self.done_steps} of {self.total_steps} graph × batch-size runs"

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            if self._engine.warm_up(self._max_batch_size, self._stop, self._progress):
                self._batcher.start()
        except Exception:
            log.exception("warm-up failed; the service will not become ready")
            self.failed = True

    def _progress(self, done: int, total: int) -> None:
        self.done_steps = done
