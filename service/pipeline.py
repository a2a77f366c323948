"""The path every inference request takes once its body is read:

    reserve room in the queue → decode + preprocess in the thread pool → batcher → rows back

all under the request's deadline and raced against the client going away. Either way out
(timeout, disconnect) cancels the work: its images leave the queue before they run, and its room
is given back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from service.batch_request import BatchResult
from service.batcher import Batcher
from service.errors import ClientDisconnected, RequestTimeout, ServiceError
from service.images import Prepared, Preprocessor
from service.metrics import Metrics


@dataclass(frozen=True)
class Outcome:
    prepared: list[Prepared]  # per image, in request order
    result: BatchResult


class Pipeline:
    def __init__(
        self,
        preprocessor: Preprocessor,
        batcher: Batcher,
        executor: Executor,
        metrics: Metrics,
    ) -> None:
        self._preprocessor = preprocessor
        self._batcher = batcher
        self._executor = executor
        self._metrics = metrics

    def check_room(self) -> None:
        """Overloaded / NotReady now, before the request's body is read, if nothing would fit."""
        self._batcher.check_room()

    async def run(
        self,
        graph: str,
        images: list[bytes],
        *,
        deadline: float,
        disconnected: Awaitable[Any],
        keep_images: bool = False,
    ) -> Outcome:
        """deadline: on the event loop's clock. disconnected: completes if the client goes."""
        loop = asyncio.get_running_loop()
        work = asyncio.ensure_future(self._work(graph, images, keep_images))
        watch = asyncio.ensure_future(disconnected)
        try:
            done, _ = await asyncio.wait(
                {work, watch},
                timeout=max(0.0, deadline - loop.time()),
                return_when="FIRST_COMPLETED",
            )
            if work in done:
                return work.result()
        finally:
            for task in (work, watch):
                task.cancel()
        await asyncio.wait({work})  # let its clean-up run: room given back, queue emptied
        if watch in done:
            raise ClientDisconnected("the client closed the connection before the answer")
        raise RequestTimeout("the request did not finish within its deadline")

    async def _work(self, graph: str, images: list[bytes], keep_images: bool) -> Outcome:
        loop = asyncio.get_running_loop()
        n = len(images)
        with self._batcher.reserve(n) as reservation:  # Overloaded / NotReady, before any work
            self._metrics.inflight_images.inc(n)
            try:
                prepared = await asyncio.gather(
                    *(
                        loop.run_in_executor(self._executor, self._prepare, data, keep_images, i, n)
                        for i, data in enumerate(images)
                    )
                )
                future = reservation.submit(graph, [p.pixels for p in prepared])
                result = await asyncio.wrap_future(future)  # cancelling this cancels the future
            finally:
                self._metrics.inflight_images.dec(n)
        return Outcome(prepared, result)

    def _prepare(self, data: bytes, keep_image: bool, index: int, count: int) -> Prepared:
        started = time.perf_counter()
        try:
            return self._preprocessor(data, keep_image)
        except ServiceError as e:
            if count == 1:
                raise
            raise type(e)(f"image {index}: {e.message}") from e  # which one of several was bad
        finally:
            self._metrics.preprocess_duration.observe(time.perf_counter() - started)
