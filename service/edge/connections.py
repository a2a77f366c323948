"""Connections that cannot be held open for free: uvicorn's HTTP/1.1 protocol (on httptools' C
parser, or h11's pure-Python one) with three bounds it lacks, and the file-descriptor limit raised
to make room for them. A request the parser cannot read is answered 400 in the service's JSON,
not the protocol's plain text.

- A request head (request line + headers) must arrive within `header_timeout_s` of the connection
  opening or of the previous answer: a client that connects and sends nothing, or trickles its
  headers byte by byte (slowloris), is closed. uvicorn's keep-alive timer alone does not do this:
  it is cancelled by the first byte of the next request.
- At most `max_connections` are open at once. One more is answered 429 and closed as soon as its
  request line shows which route it wanted (so the body speaks that route's protocol), or after
  REFUSAL_WAIT_S without one; idle sockets cannot use up the process's file descriptors and lock
  everyone else out. At most REFUSALS_PENDING such connections wait for their request line; past
  that, one more is refused at once in the native shape.
- A request carrying both Content-Length and Transfer-Encoding (a request-smuggling probe: two
  parsers may frame it differently) is refused with 400 and the connection closed, so a second
  request hidden in its body is never answered. That check, the pace of bodies and the cap on
  requests handled at once are an ASGI middleware (`RequestGuard`): they answer with the
  service's own error bodies.
- A body must keep moving (`BodyPace`): a client that trickles it (300 clients at a byte a
  second once held every request slot for 30 s) is answered 408 and closed in seconds, and a
  request only takes its slot among `max_concurrent` once its body is in: uploads in progress
  are bounded by the connection cap, the body budget and the pace, and never lock work out.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.edge.responses import error_response, raw_refusal, request_path
from service.metrics import Metrics
from vit_core.errors import BodyTimeout, MalformedRequest, Overloaded, ServiceError

log = logging.getLogger(__name__)

FD_RESERVE = 64  # descriptors kept for the bundle's files, logs, pipes, thread wake-ups
REFUSAL_WAIT_S = 1.0  # how long a connection over the cap may take to send its request line
REFUSALS_PENDING = FD_RESERVE // 2  # connections over the cap waiting for their request line
_LINE_BYTES = 8192  # a request line longer than this is refused without reading on
_MALFORMED = "the request is not well-formed HTTP (the parser stopped reading it)"


def _too_many_connections() -> ServiceError:
    return Overloaded("too many open connections; retry shortly")


Protocol = type[H11Protocol] | type[HttpToolsProtocol]
PARSERS: dict[str, Protocol] = {"httptools": HttpToolsProtocol, "h11": H11Protocol}


def guarded(
    parser: str,
    header_timeout_s: float,
    max_connections: int,
    draining: Callable[[], bool],
    refused: Callable[[ServiceError], None],
) -> Protocol:
    """uvicorn's HTTP/1.1 protocol on `parser` ("httptools", its C parser, or "h11") with the
    header deadline, the connection cap, JSON for malformed requests, and while `draining()` an
    answer that closes its connection. `refused` counts what it answers itself (metrics)."""

    waiting: set[Any] = set()  # connections over the cap, waiting for their request line

    class Guarded(PARSERS[parser]):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_timer: asyncio.TimerHandle | None = None
            self._waiting_for: object = None  # the cycle in place when the timer was armed
            self._refused: bytearray | None = None  # over the cap: what came of its request line

        def connection_made(self, transport: asyncio.Transport) -> None:
            if len(self.connections) < max_connections:
                super().connection_made(transport)
                self._arm()
                return
            self.transport = transport
            if len(waiting) >= REFUSALS_PENDING:
                self._refuse("")
                return
            waiting.add(self)
            self._refused = bytearray()
            self._head_timer = self.loop.call_later(REFUSAL_WAIT_S, self._refuse, "")

        def data_received(self, data: bytes) -> None:
            if self._refused is None:
                super().data_received(data)
                return
            self._refused += data
            line, found, _ = bytes(self._refused).partition(b"\r\n")
            if found or len(self._refused) > _LINE_BYTES:
                self._refuse(request_path(line))

        def _refuse(self, path: str) -> None:
            """Answer 429 in the shape of `path`'s route ("" if unknown: native) and close."""
            self._disarm()
            waiting.discard(self)
            if not self.transport.is_closing():
                error = _too_many_connections()
                refused(error)
                self.transport.write(raw_refusal(error, path))
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            """What the parser could not read (no route to speak for): the native JSON shape,
            not the protocol's plain text, and the connection closed."""
            if not self.transport.is_closing():
                error = MalformedRequest(_MALFORMED)
                refused(error)
                self.transport.write(raw_refusal(error, ""))
                self.transport.close()

        def _head_arrived(self) -> None:
            """A new request's head is in: its deadline is met."""
            self._disarm()
            if draining() and self.cycle is not None:
                # uvicorn closes the connections it has when it shuts down; one accepted a
                # moment later would be kept alive, and a busy client would hold this process
                # for the whole drain timeout.
                self.cycle.keep_alive = False

        def on_response_complete(self) -> None:
            finished = self.cycle
            super().on_response_complete()  # may already start a pipelined next request
            if self.cycle is finished and not self.transport.is_closing():
                self._arm()  # the next request's head must come in time too

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            waiting.discard(self)
            if self in self.connections:  # a refused connection never joined
                super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._waiting_for = self.cycle
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            idle = self.cycle is None or self.cycle.response_complete  # no request in flight
            if self.cycle is self._waiting_for and idle and not self.transport.is_closing():
                self.transport.close()

    class GuardedH11(Guarded):
        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not self._waiting_for:
                self._head_arrived()

    class GuardedHttpTools(Guarded):
        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._head_arrived()

    return GuardedH11 if parser == "h11" else GuardedHttpTools


@dataclass(frozen=True)
class BodyPace:
    """How fast a request body must come (Apache's mod_reqtimeout rule): no read waits longer
    than `timeout_s`, and a body is due `timeout_s + received / min_rate` after it starts."""

    timeout_s: float
    min_rate: float  # bytes per second


class PacedBody:
    """An ASGI `receive` whose body must keep to `pace` (else BodyTimeout, 408, and the
    connection closed); `on_complete` runs as the last piece of the body arrives. Once the body
    is in, `receive` is the server's own again (waiting for a disconnect is not timed)."""

    def __init__(self, receive: Receive, pace: BodyPace, on_complete: Callable[[], None]) -> None:
        self.receive, self.pace, self.on_complete = receive, pace, on_complete
        self.started: float | None = None
        self.received = 0
        self.complete = False

    async def __call__(self) -> Message:
        if self.complete:
            return await self.receive()
        now = time.monotonic()
        self.started = self.started or now
        due = self.started + self.pace.timeout_s + self.received / self.pace.min_rate
        try:
            async with asyncio.timeout(max(0.0, min(self.pace.timeout_s, due - now))):
                message = await self.receive()
        except TimeoutError:
            raise self._too_slow() from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
                self.on_complete()
        return message

    def _too_slow(self) -> BodyTimeout:
        pace, elapsed = self.pace, time.monotonic() - (self.started or 0.0)
        return BodyTimeout(
            f"the request body came too slowly: {self.received:,} bytes in {elapsed:.1f} s; it "
            f"may pause at most {pace.timeout_s:g} s and must average {pace.min_rate:,.0f} "
            f"bytes/s after the first {pace.timeout_s:g} s"
        )


class RequestGuard:
    """ASGI middleware in front of everything: smuggling-shaped requests are refused, bodies are
    paced (PacedBody), and at most `max_concurrent` requests are handled at once (more get 429),
    each counted from when its body is in, or from its start if it has none. The `exempt` paths
    (the probes and /metrics: app.py passes the routes of the routers that are always open) are
    not counted: an instance busy with work is still alive and must say so."""

    def __init__(
        self,
        app: ASGIApp,
        max_concurrent: int,
        pace: BodyPace,
        metrics: Metrics,
        exempt: frozenset[str],
        on_abandoned: Callable[[], None],
    ) -> None:
        self.app, self.max_concurrent, self.pace, self.metrics = app, max_concurrent, pace, metrics
        self.exempt, self.on_abandoned = exempt, on_abandoned
        self.active = 0  # only the event loop's thread touches it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names = {name for name, _ in scope["headers"]}
        if b"content-length" in names and b"transfer-encoding" in names:  # RFC 9112 §6.1
            error: ServiceError = MalformedRequest(
                "the request has both Content-Length and Transfer-Encoding; send one"
            )
            await self._refuse(error, scope, receive, send, close=True)
            return
        if scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        slot = _Slot(self)
        if not _has_body(scope):
            try:
                slot.take()
            except Overloaded as error:
                await self._refuse(error, scope, receive, send)
                return
        try:  # a body's last piece takes the slot, or raises Overloaded into the route (429)
            await self.app(scope, PacedBody(receive, self.pace, slot.take), send)
        except asyncio.CancelledError:  # the server gave up on it (a drain that timed out)
            self.on_abandoned()
            raise
        finally:
            slot.give()

    async def _refuse(
        self, error: ServiceError, scope: Scope, receive: Receive, send: Send, close: bool = False
    ) -> None:
        self.metrics.rejections.labels(error.label).inc()
        response = error_response(error, scope["path"])
        if close:
            response.headers["Connection"] = "close"  # whatever follows it is never read
        await response(scope, receive, send)


class _Slot:
    """One request's place among the guard's `max_concurrent`, taken at most once."""

    def __init__(self, guard: RequestGuard) -> None:
        self.guard, self.held = guard, False

    def take(self) -> None:
        if self.held:
            return
        if self.guard.active >= self.guard.max_concurrent:
            active = self.guard.active
            raise Overloaded(f"{active} requests are in progress, the limit; retry shortly")
        self.guard.active += 1
        self.held = True

    def give(self) -> None:
        if self.held:
            self.guard.active -= 1
            self.held = False


def _has_body(scope: Scope) -> bool:
    """Whether the request says a body follows (a Content-Length above 0, or chunked)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b"0 ")):
            return True
    return False


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one where allowed; the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a container may forbid it; the cap below still holds
            log.info("could not raise the open-files limit above %d", soft)
    return soft


def connection_cap(requested: int, fd_limit: int) -> int:
    """max_connections, kept well below the descriptors the process may open."""
    return max(1, min(requested, fd_limit - FD_RESERVE, fd_limit * 3 // 4))
