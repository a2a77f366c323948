"""The path every inference request takes once its body is read:

    reserve room in the queue → decode + preprocess in the thread pool → batcher → rows back

Inputs are encoded images, or (the Open Inference Protocol's `pixels` tensor) images already
preprocessed by the client, which skip the decoding but take the same queue, batches and limits.

all under the request's deadline and raced against the client going away. Either way out
(timeout, disconnect) cancels the work: its images leave the queue before they run, and its room
is given back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.inference.batch_request import BatchResult
from service.inference.batcher import Batcher
from service.metrics import Metrics
from vit_core.errors import ClientDisconnected, RequestTimeout, ServiceError
from vit_core.geometry import hw
from vit_core.images import Prepared, Preprocessor

Inputs = list[bytes] | np.ndarray  # encoded images, or pixels (n, *row) as the graph takes them


@dataclass(frozen=True)
class Outcome:
    prepared: list[Prepared]  # per image, in request order
    result: BatchResult  # the rows, and how long its images queued and ran


@dataclass(frozen=True)
class Job:
    """One request's inputs, read by the HTTP edge, on their way through the pipeline."""

    pipeline: Pipeline
    inputs: Inputs
    deadline: float  # event-loop time by which the answer must be on its way
    disconnected: Callable[[], Awaitable[Any]]  # a fresh wait that completes if the client goes
    endpoint: str  # labels its images in vit_images_total

    async def run(self, graph: str, keep_images: bool = False) -> Outcome:
        outcome = await self.pipeline.run(
            graph,
            self.inputs,
            deadline=self.deadline,
            disconnected=self.disconnected(),
            keep_images=keep_images,
        )
        self.pipeline.count_answered(self.endpoint, len(self.inputs))
        return outcome


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

    def count_answered(self, endpoint: str, images: int) -> None:
        self._metrics.images.labels(endpoint).inc(images)

    def check_room(self) -> None:
        """Overloaded / NotReady now, before the request's body is read, if nothing would fit."""
        self._batcher.check_room()

    async def run(
        self,
        graph: str,
        images: Inputs,
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

    async def _work(self, graph: str, images: Inputs, keep_images: bool) -> Outcome:
        n = len(images)
        with self._batcher.reserve(n) as reservation:  # Overloaded / NotReady, before any work
            self._metrics.inflight_images.inc(n)
            try:
                prepared = await self._prepare_all(images, keep_images)
                future = reservation.submit(graph, [p.pixels for p in prepared])
                result = await asyncio.wrap_future(future)  # cancelling this cancels the future
            finally:
                self._metrics.inflight_images.dec(n)
        return Outcome(prepared, result)

    async def _prepare_all(self, images: Inputs, keep_images: bool) -> list[Prepared]:
        if isinstance(images, np.ndarray):  # already pixels: the model sees all of each
            h, w = hw(self._preprocessor.image_size)
            return [Prepared(pixels, None, (0.0, 0.0, float(w), float(h))) for pixels in images]
        loop = asyncio.get_running_loop()
        n = len(images)
        return await asyncio.gather(
            *(
                loop.run_in_executor(self._executor, self._prepare, data, keep_images, i, n)
                for i, data in enumerate(images)
            )
        )

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
