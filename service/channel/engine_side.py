"""The engine's end of the channel: every front connects once, and each SUBMIT it sends runs
through the pipeline as its own task and is answered once, with a RESULT or an ERROR.

A CANCEL (the client left, the deadline passed) and a front's connection closing both drop the
request's images from the queue before they run: they are the pipeline's `disconnected`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from service.channel.messages import (
    Frames,
    Kind,
    decode_submit,
    encode_error,
    encode_info,
    encode_result,
)
from service.inference.pipeline import Pipeline
from vit_core.errors import InternalError, ServiceError
from vit_core.memory import TrimWhenIdle

log = logging.getLogger(__name__)

Row = tuple[tuple[int, ...], np.dtype[Any]]  # one image's shape and dtype as the graphs take it


class ChannelServer:
    """What every front's connection shares: the pipeline, the graphs' row, the engine's info."""

    def __init__(self, pipeline: Pipeline, row: Row, info: Callable[[], dict[str, Any]]) -> None:
        self.pipeline, self.row, self.info = pipeline, row, info
        self.connections: set[FrontConnection] = set()
        self.idle = asyncio.Event()  # set while no front is connected
        self.idle.set()
        self.running = 0  # requests of every front in the pipeline now
        self.trim = TrimWhenIdle()  # the heap a burst of decodes left is handed back after it

    def finished(self, _: asyncio.Task[None]) -> None:
        self.running -= 1
        if not self.running:
            self.trim.idle()

    def protocol(self) -> FrontConnection:
        return FrontConnection(self)

    def close(self) -> None:
        """Close every front's channel (their requests waiting get 503 at once)."""
        for connection in list(self.connections):
            connection.close()


class FrontConnection(asyncio.Protocol):
    def __init__(self, server: ChannelServer) -> None:
        self._server = server
        self._frames = Frames(self._on_frame)
        self._cancels: dict[int, asyncio.Event] = {}  # request id → set when it is to be dropped
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        self._server.connections.add(self)
        self._server.idle.clear()

    def data_received(self, data: bytes) -> None:
        self._frames.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        for cancel in self._cancels.values():  # the front is gone: nobody waits for these
            cancel.set()
        self._server.connections.discard(self)
        if not self._server.connections:
            self._server.idle.set()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _on_frame(self, kind: Kind, request: int, body: memoryview) -> None:
        if kind == Kind.SUBMIT:
            cancel = self._cancels[request] = asyncio.Event()
            job = decode_submit(body, self._server.row)
            self._server.running += 1
            task = asyncio.get_running_loop().create_task(self._run(request, job, cancel))
            task.add_done_callback(self._server.finished)  # once its frame and buffers are freed
        elif kind == Kind.CANCEL:
            if (dropped := self._cancels.get(request)) is not None:
                dropped.set()
        elif kind == Kind.INFO:
            self._write(encode_info(request, self._server.info()))
        else:
            log.error("a front sent a %s frame; closing its connection", kind.name)
            if self._transport is not None:
                self._transport.close()

    async def _run(self, request: int, job: Any, cancel: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            outcome = await self._server.pipeline.run(
                job.graph,
                job.images,
                deadline=loop.time() + job.timeout_s,
                disconnected=cancel.wait(),
                keep_images=job.keep_images,
            )
            answer = encode_result(request, outcome)
        except ServiceError as e:
            answer = encode_error(request, e)
        except Exception:  # a bug: the front answers 500, the log has the cause
            log.exception("request %d failed in the engine", request)
            answer = encode_error(request, InternalError())
        finally:
            del self._cancels[request]
        self._write(answer)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
