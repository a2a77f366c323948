"""The path every inference request takes in the engine, once a front has passed it on:

    reserve room in the queue → decode + preprocess in the thread pool → batcher → rows back

Inputs are encoded images, or (the Open Inference Protocol's `pixels` tensor) images already
preprocessed by the client, which skip the decoding but take the same queue, batches and limits.

All under the request's deadline and raced against the client going away (the front's CANCEL).
Either way out (timeout, disconnect), and a refused image, cancels the work: its images leave the
decode and batch queues before they run, one being decoded is waited for, and its room is given
back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from service.channel.messages import Outcome, Picture
from service.inference.batcher import Batcher
from service.inference.engine_io import Row
from service.metrics import Metrics
from vit_core.errors import ClientDisconnected, RequestTimeout, ServiceError
from vit_core.images import Preprocessor

if TYPE_CHECKING:
    from service.inference.device_decode import DeviceDecoder

T = TypeVar("T")
Inputs = list[bytes] | np.ndarray  # encoded images, or pixels (n, *row) as the graph takes them


class Pipeline:
    def __init__(
        self,
        preprocessor: Preprocessor,
        batcher: Batcher,
        executor: Executor,
        metrics: Metrics,
        decoder: DeviceDecoder | None = None,
    ) -> None:
        """decoder: the device decode stage (VIT_DECODE=device), else the host transform."""
        self._preprocessor = preprocessor
        self._batcher = batcher
        self._executor = executor
        self._metrics = metrics
        self._decoder = decoder

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
                ready = await self._prepare_all(images, keep_images)
                future = reservation.submit(graph, [image.row for image in ready])
                result = await asyncio.wrap_future(future)  # cancelling this cancels the future
            finally:
                self._metrics.inflight_images.dec(n)
        pictures = [image.picture for image in ready if image.picture is not None]
        return Outcome(result.outputs, result.queue_s, result.inference_s, pictures)

    async def _prepare_all(self, images: Inputs, keep_images: bool) -> list[Ready]:
        if isinstance(images, np.ndarray):  # already pixels: the rows as they are
            return [Ready(pixels, None) for pixels in images]
        if self._decoder is not None and not keep_images:  # a heat-map's picture: the host's
            futures = [self._executor.submit(self._prepare_on_device, images)]
            return (await _all_or_none(futures))[0]
        n = len(images)
        return await _all_or_none(
            [
                self._executor.submit(self._prepare, data, keep_images, i, n)
                for i, data in enumerate(images)
            ]
        )

    def _prepare_on_device(self, images: list[bytes]) -> list[Ready]:
        """Every image priced from its header first (the same refusals as the host path), then
        the request's JPEGs decoded in one call where the model runs; what the decoder does not
        take goes through the host transform."""
        assert self._decoder is not None
        started, n = time.perf_counter(), len(images)
        for index, data in enumerate(images):
            _for_image(self._preprocessor.price, data, index, n)
        rows = self._decoder.decode(images)
        ready = [
            Ready(row, None) if row is not None else self._prepare(data, False, index, n)
            for index, (data, row) in enumerate(zip(images, rows, strict=True))
        ]
        self._metrics.preprocess_duration.observe((time.perf_counter() - started) / n)
        return ready

    def _prepare(self, data: bytes, keep_image: bool, index: int, count: int) -> Ready:
        started = time.perf_counter()
        try:
            p = _for_image(self._preprocessor, data, index, count, keep_image)
        finally:
            self._metrics.preprocess_duration.observe(time.perf_counter() - started)
        return Ready(p.pixels, Picture(p.image, p.box) if p.image is not None else None)


@dataclass(frozen=True)
class Ready:
    """One image ready for a batch: its row, and the picture a heat-map is drawn over when the
    request asked to keep it."""

    row: Row
    picture: Picture | None


async def _all_or_none(futures: list[Future[T]]) -> list[T]:
    """Every result, in order. If one image is refused, or the request is cancelled (its deadline,
    its client gone), the images not started are dropped and the request ends only once those
    already being decoded are done: no decode outlives its request unseen, holding the decode
    budget and the memory the engine hands back when it is idle (vit_core/memory.py)."""
    try:
        return await asyncio.gather(*map(asyncio.wrap_future, futures))
    except BaseException:
        for future in futures:
            future.cancel()  # only those still queued: a running decode cannot be stopped
        running = [asyncio.wrap_future(f) for f in futures if not f.cancelled()]
        await asyncio.gather(*running, return_exceptions=True)
        raise


def _for_image(step: Callable[..., T], data: bytes, index: int, count: int, *args: Any) -> T:
    """step(data, *args); its refusal names the image when the request has several."""
    try:
        return step(data, *args)
    except ServiceError as e:
        if count == 1:
            raise
        raise type(e)(f"image {index}: {e.message}") from e
