"""What the batcher keeps per request and per queued image, and what a request gets back.

A request's images may ride in several batches (a request bigger than a batch, or one that shares
batches with others); its rows are put back together here in the request's own order.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

import numpy as np

from service.inference.engine_io import Row
from vit_core.errors import ServiceError


@dataclass(frozen=True)
class BatchResult:
    outputs: dict[str, np.ndarray]  # each (n, ...): the request's rows, in its image order
    queue_s: float  # the longest any of its images waited for a batch
    inference_s: float  # ONNX Runtime time of the batches it rode in
    batches: int


class Request:
    def __init__(self, graph: str, n: int, future: Future[BatchResult]) -> None:
        self.graph, self.n, self.future = graph, n, future
        self.submitted = time.monotonic()
        self.queued = n  # images still in the queue (guarded by the batcher's lock)
        self.remaining = n  # images without an answer yet (guarded by the batcher's lock)
        self.rows: dict[str, np.ndarray] = {}
        self.queue_s = self.inference_s = 0.0
        self.batches = 0

    def deliver(self, index: int, outputs: Mapping[str, np.ndarray], row: int) -> None:
        for name, out in outputs.items():
            if name not in self.rows:
                self.rows[name] = np.empty((self.n, *out.shape[1:]), out.dtype)
            self.rows[name][index] = out[row]
        self.remaining -= 1

    def finish_batch(self, started: float, elapsed: float) -> None:
        self.queue_s = max(self.queue_s, started - self.submitted)
        self.inference_s += elapsed
        self.batches += 1
        if self.remaining == 0:
            result = BatchResult(self.rows, self.queue_s, self.inference_s, self.batches)
            with unless_cancelled():
                self.future.set_result(result)

    def fail(self, error: ServiceError) -> None:
        with unless_cancelled():
            self.future.set_exception(error)


@dataclass(slots=True)
class Entry:
    request: Request
    index: int  # position in its request
    pixels: Row  # a row of the graph's input, e.g. (S, S, 3) uint8, or an image to resize into one


def unless_cancelled() -> contextlib.suppress:
    """Completing a future its caller cancelled meanwhile (timeout, client gone) is a no-op."""
    return contextlib.suppress(InvalidStateError)
