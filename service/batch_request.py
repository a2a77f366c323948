"""What the batcher keeps per request and per queued image, and what a request gets back.

`Reservation` is the room a request holds in the batcher's queue while its images decode.
A request's images may ride in several batches (a request bigger than a batch, or one that shares
batches with others); its rows are put back together here in the request's own order.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.errors import ServiceError

if TYPE_CHECKING:
    from service.batcher import Batcher


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
        self.remaining = n  # images without an answer yet (worker thread only)
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
    pixels: np.ndarray  # one row of the graph's input, e.g. (S, S, 3) uint8


def unless_cancelled() -> contextlib.suppress:
    """Completing a future its caller cancelled meanwhile (timeout, client gone) is a no-op."""
    return contextlib.suppress(InvalidStateError)


class Reservation:
    """Room for n images in the queue, held while they are decoded; a context manager that gives
    the room back if the images never arrive (a bad image, a timeout)."""

    def __init__(self, batcher: Batcher, n: int) -> None:
        self._batcher, self.n, self._held = batcher, n, True

    def submit(self, graph: str, images: Sequence[np.ndarray]) -> Future[BatchResult]:
        if not self._held:
            raise RuntimeError("this reservation was already used or released")
        if len(images) != self.n:
            raise ValueError(f"reserved {self.n} images, submitted {len(images)}")
        self._held = False
        return self._batcher._submit(graph, images)

    def release(self) -> None:
        if self._held:
            self._held = False
            self._batcher._release(self.n)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
