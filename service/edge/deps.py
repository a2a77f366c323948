"""What a route may ask for (FastAPI dependencies): the runtime, the API key check, and an
inference request's job (pipeline.Job: its images or tensors, read under its deadline), from the
native API or the Open Inference Protocol. Resolvers only: running a job is the pipeline's.

All async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool

from service.channel.front_side import Inputs, Job
from service.edge.inputs import Limits, media_type, read_body, read_images
from service.runtime import Runtime
from service.v2.infer import Inference, parse_request
from vit_core.errors import BodyTimeout, InvalidParameter, NotReady, Unauthorized, excerpt

WATCH_AFTER_S = 0.05  # a client that leaves is noticed after at most this long in the queue
T = TypeVar("T")


async def known_query_only(request: Request) -> None:
    """An unknown query parameter (`?topk=2` for `top_k`) is a 422 naming the known ones, not
    silently ignored: the client would get an answer to a question it did not ask."""
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    known = _query_names(route)
    unknown = [name for name in request.query_params if name not in known]
    if unknown:
        takes = ", ".join(sorted(known)) if known else "no query parameters"
        raise InvalidParameter(
            f"unknown query parameter {excerpt(unknown[0])!r}; {route.path} takes {takes}"
        )


def _query_names(route: APIRoute) -> frozenset[str]:
    """The aliases of every query parameter the route and its dependencies declare (a walk over
    a handful of nodes, done only for requests that carry a query)."""
    names: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        names.update(p.alias for p in dependant.query_params)
        pending.extend(dependant.dependencies)
    return frozenset(names)


async def _runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.state, "runtime", None)  # the lifespan's state
    if runtime is None:
        raise NotReady("the service is starting")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
_bearer = HTTPBearer(auto_error=False, description="VIT_API_KEY, when the service has one")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def api_key_guard(key: SecretStr) -> Callable[[Credentials], Awaitable[None]]:
    """A dependency that refuses (401) a request without `Authorization: Bearer <key>`."""
    expected = key.get_secret_value().encode()

    async def require_api_key(credentials: Credentials) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not secrets.compare_digest(given, expected):  # constant time: no timing oracle
            raise Unauthorized("missing or wrong API key; send Authorization: Bearer <key>")

    return require_api_key


@dataclass(frozen=True)
class V2Job:
    """An Open Inference Protocol request: its job, and the outputs it asked for."""

    job: Job
    inference: Inference


async def _job(request: Request, runtime: RuntimeDep) -> AsyncIterator[Job]:
    """A native request's images: multipart, image/* or JSON (inputs.py)."""
    media, limits = media_type(request), _limits(runtime)
    async with _admitted(request, runtime) as take:
        deadline, images = await _receive(runtime, read_images(request, media, limits, take))
        yield _make_job(request, runtime, images, deadline)


async def _v2_job(request: Request, runtime: RuntimeDep) -> AsyncIterator[V2Job]:
    """A v2 infer body; parsing (JSON of up to max_body_bytes) runs off the loop."""
    limits = _limits(runtime)

    async def read(take: Callable[[int], None]) -> Inference:
        body = await read_body(request, limits.max_body_bytes, take)
        return await run_in_threadpool(
            parse_request, body, request.headers, runtime.manifest, limits, take=take
        )

    async with _admitted(request, runtime) as take:
        deadline, inference = await _receive(runtime, read(take))
        yield V2Job(_make_job(request, runtime, inference.inputs, deadline), inference)


JobDep = Annotated[Job, Depends(_job)]
V2JobDep = Annotated[V2Job, Depends(_v2_job)]


@asynccontextmanager
async def _admitted(request: Request, runtime: Runtime) -> AsyncIterator[Callable[[int], None]]:
    """Every inference request's prologue: a full queue is refused before the body is read
    (under overload, most requests), and the bytes read count against the service's
    request-bytes budget until the answer is done (the `take` yielded)."""
    runtime.check_room()
    with runtime.bodies.held_by_request() as take:
        yield take


def _make_job(request: Request, runtime: Runtime, inputs: Inputs, deadline: float) -> Job:
    route = request.scope.get("route")
    endpoint = route.path if isinstance(route, APIRoute) else request.url.path
    answered = runtime.metrics.images.labels(endpoint).inc
    return Job(runtime.engine, inputs, deadline, partial(_disconnected, request), answered)


def _limits(runtime: Runtime) -> Limits:
    return Limits(runtime.settings.max_body_bytes, runtime.settings.max_images_per_request)


async def _receive(runtime: Runtime, body: Awaitable[T]) -> tuple[float, T]:
    """(the request's deadline on the loop's clock, what `body` read before it): a body still
    arriving at the deadline is the client's delay (408), however steadily it kept moving."""
    timeout = runtime.settings.request_timeout_s
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        return deadline, await asyncio.wait_for(body, timeout)
    except TimeoutError as e:
        message = f"the request body did not arrive within the request's {timeout:g} s"
        raise BodyTimeout(message) from e


async def _disconnected(request: Request) -> None:
    """Completes when the client goes away (the body is already read, so this only waits).

    It starts listening only after WATCH_AFTER_S: asking the server to watch the socket again
    costs a system call or two per request, worth paying only for requests that have to wait.
    """
    await asyncio.sleep(WATCH_AFTER_S)
    while (await request.receive())["type"] != "http.disconnect":
        pass
