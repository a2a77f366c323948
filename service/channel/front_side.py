"""A front's end of the channel: one connection to the engine, many requests in flight on it.

`EngineClient.run` has the pipeline's own signature: the request's encoded images (or pixels) go
to the engine, and what comes back is only what the answer needs (its rows, timings, and the
pictures a heat-map is drawn over). A client that leaves or a deadline that passes sends CANCEL,
which drops the request's images from the engine's queue. If the engine goes away, every request
waiting on it is answered 503 at once, and so is every one after: nothing hangs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from service.channel.messages import (
    Frames,
    Kind,
    Outcome,
    Submit,
    decode_error,
    decode_info,
    decode_result,
    encode_submit,
    frame,
)
from vit_core.errors import ClientDisconnected, NotReady, RequestTimeout

log = logging.getLogger(__name__)

Inputs = list[bytes] | np.ndarray  # encoded images, or pixels (n, *row) as the graph takes them
SLICE = 128 << 10  # bytes written at a time: about what a Unix socket takes in one send
GRACE_S = 1.0  # past the deadline, how long to wait for the engine's own timeout answer
ENGINE_GONE = "the engine has stopped; this instance is restarting"


class EngineClient(asyncio.Protocol):
    def __init__(self) -> None:
        self._frames = Frames(self._on_frame)
        self._waiting: dict[int, asyncio.Future[tuple[Kind, Any]]] = {}
        self._ids = itertools.count(1)
        self._transport: asyncio.Transport | None = None
        self.lost = asyncio.Event()  # set when the engine's end closes
        # Frames go out in slices as the socket takes them, never piling up in the transport's
        # buffer: asyncio (3.11) moves all of that buffer down after every send, which made a
        # 32-image request cost ~100 µs of the front's CPU per image.
        self._outbox: deque[memoryview] = deque()
        self._writable = True

    @classmethod
    async def connect(cls, address: str, timeout: float) -> EngineClient:
        """Connect to the engine listening on the Unix socket `address` (it may still be
        starting: retried until `timeout`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                _, client = await loop.create_unix_connection(cls, address)
                return client
            except (FileNotFoundError, ConnectionRefusedError):
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    @property
    def alive(self) -> bool:
        return self._transport is not None and not self.lost.is_set()

    async def run(
        self,
        graph: str,
        inputs: Inputs,
        *,
        deadline: float,
        disconnected: Awaitable[Any],
        keep_images: bool = False,
    ) -> Outcome:
        """deadline: on the event loop's clock. disconnected: completes if the client goes."""
        loop = asyncio.get_running_loop()
        request = next(self._ids)
        job = Submit(graph, inputs, keep_images, max(0.0, deadline - loop.time()))
        answer = self._send(request, encode_submit(request, job))
        watch = asyncio.ensure_future(disconnected)
        try:
            done, _ = await asyncio.wait(
                {answer, watch},
                timeout=max(0.0, deadline - loop.time()) + GRACE_S,
                return_when="FIRST_COMPLETED",
            )
        finally:
            watch.cancel()
        if answer in done:
            kind, value = answer.result()
            if kind == Kind.ERROR:
                raise value
            outcome: Outcome = value
            return outcome
        self._cancel(request)
        if watch in done:
            raise ClientDisconnected("the client closed the connection before the answer")
        raise RequestTimeout("the request did not finish within its deadline")

    async def info(self) -> dict[str, Any]:
        """How the engine runs: its providers, batch sizes, warm-up measurements."""
        request = next(self._ids)
        _, info = await self._send(request, [frame(Kind.INFO, request)])
        return dict(info)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _send(self, request: int, buffers: list[Any]) -> asyncio.Future[tuple[Kind, Any]]:
        if not self.alive:
            raise NotReady(ENGINE_GONE)
        answer = self._waiting[request] = asyncio.get_running_loop().create_future()
        self._outbox.extend(memoryview(b).cast("B") for b in buffers if len(b))
        self._flush()
        return answer

    def _flush(self) -> None:
        """Write what is waiting, a slice at a time, while the socket keeps up."""
        assert self._transport is not None
        while self._outbox and self._writable and not self._transport.is_closing():
            view = self._outbox[0]
            self._transport.write(view[:SLICE])
            if len(view) > SLICE:
                self._outbox[0] = view[SLICE:]
            else:
                self._outbox.popleft()

    def _cancel(self, request: int) -> None:
        if self._waiting.pop(request, None) is not None and self.alive:
            assert self._transport is not None
            self._transport.write(frame(Kind.CANCEL, request))

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._flush()

    def data_received(self, data: bytes) -> None:
        self._frames.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self._outbox.clear()
        if self._waiting:
            log.error("the engine closed the channel with %d requests waiting", len(self._waiting))
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_result((Kind.ERROR, NotReady(ENGINE_GONE)))
        self._waiting.clear()

    def _on_frame(self, kind: Kind, request: int, body: memoryview) -> None:
        answer = self._waiting.pop(request, None)
        if answer is None or answer.done():  # cancelled here before the engine answered
            return
        decode: Callable[[memoryview], Any] = {
            Kind.RESULT: decode_result,
            Kind.ERROR: decode_error,
            Kind.INFO: decode_info,
        }[kind]
        answer.set_result((kind, decode(body)))


@dataclass(frozen=True)
class Job:
    """One request's inputs, read by the HTTP edge, on their way to the engine: what routes run."""

    client: EngineClient
    inputs: Inputs
    deadline: float  # event-loop time by which the answer must be on its way
    disconnected: Callable[[], Awaitable[Any]]  # a fresh wait that completes if the client goes
    count_answered: Callable[[int], None]  # vit_images_total for the route, once answered

    async def run(self, graph: str, keep_images: bool = False) -> Outcome:
        outcome = await self.client.run(
            graph,
            self.inputs,
            deadline=self.deadline,
            disconnected=self.disconnected(),
            keep_images=keep_images,
        )
        self.count_answered(len(self.inputs))
        return outcome
