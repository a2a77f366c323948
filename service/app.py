"""create_app(settings, runtime): a front's FastAPI app, its lifespan, one error handler, the
metrics middleware and the request guard.

Start-up: the lifespan connects the front's Runtime to the engine process and serves at once;
/readyz turns 200 when the engine has warmed up and every front is up (service/runtime.py).
Shut-down (SIGTERM): uvicorn stops accepting and lets in-flight requests finish (drain_timeout_s),
their images still running in the engine; then the channel closes. The runtime reaches the routes
as the lifespan's state (request.state.runtime); the app itself holds nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.edge.connections import BodyPace, RequestGuard
from service.edge.deps import api_key_guard, known_query_only
from service.edge.middleware import RequestMetrics
from service.edge.responses import error_response, from_http_exception
from service.metrics import Metrics
from service.routes import docs, inference, operations, page, v2
from service.runtime import Runtime
from service.settings import Settings
from vit_core.errors import InternalError, InvalidParameter, ServiceError, describe_validation

log = logging.getLogger(__name__)

DESCRIPTION = """\
Vision Transformer inference over HTTP: dynamic batching on ONNX Runtime.

Send images as **multipart/form-data** file parts, as a raw **image/\\*** body, or as **JSON**
`{"images": ["<base64 or data: URI>", ...]}`. Every error answers
`{"error": {"code": ..., "message": ...}}`; 429 and 503 carry Retry-After.

The same model also speaks the **Open Inference Protocol** (KServe v2) under `/v2` (images as a
BYTES tensor, or preprocessed pixels; errors as `{"error": "..."}`), and `/` is a page for people.
"""


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """The service for settings, over a front's `runtime` (its lifespan connects it to the
    engine). Without one the app only describes itself: its routes and OpenAPI schema."""
    metrics = runtime.metrics if runtime else Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Runtime]]:
        if runtime is None:
            raise RuntimeError("an app made without a runtime describes the API; it cannot serve")
        await runtime.start()
        try:
            yield {"runtime": runtime}
        finally:
            await runtime.close()

    app = FastAPI(
        title="vit-service",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by routes/docs.py: offline, and behind the key when there is one
        redoc_url=None,
        openapi_url=None,
    )
    # The last added runs first: metrics see every answer, the guard's refusals included.
    always_open = [operations.router, v2.probes_router]  # probes and scrapes: never refused as busy
    app.add_middleware(
        RequestGuard,
        max_concurrent=settings.max_concurrent_requests,
        pace=BodyPace(settings.body_timeout_s, settings.min_body_rate),
        metrics=metrics,
        exempt=frozenset(route.path for r in always_open for route in r.routes),  # type: ignore[attr-defined]
        on_abandoned=runtime.abandon if runtime else lambda: None,
    )
    app.add_middleware(RequestMetrics, metrics=metrics)
    _add_error_handler(app, metrics)
    # The key first, then the query: a client without the key learns nothing, not even which
    # parameters a route takes.
    guard = [Depends(api_key_guard(settings.api_key))] if settings.api_key else []
    known = Depends(known_query_only)
    app.include_router(inference.router, dependencies=[*guard, known])
    app.include_router(v2.router, dependencies=[*guard, known])
    app.include_router(docs.router, dependencies=[*([] if settings.public_docs else guard), known])
    for router in (*always_open, page.router):
        app.include_router(router, dependencies=[known])
    return app


def _add_error_handler(app: FastAPI, metrics: Metrics) -> None:
    """Every way a request can fail becomes a ServiceError, answered (and counted) here."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        error = _as_service_error(request, exc)
        if not isinstance(error, InternalError):  # failures are counted where they happen
            metrics.rejections.labels(error.label).inc()
        return error_response(error, request.url.path)

    for kind in (ServiceError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(kind, handle)


def _as_service_error(request: Request, exc: Exception) -> ServiceError:
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, RequestValidationError):
        return InvalidParameter(describe_validation(exc.errors(), limit=1))
    if isinstance(exc, HTTPException):
        method, path = request.method, request.url.path
        return from_http_exception(exc.status_code, str(exc.detail), method, path, exc.headers)
    # Anything else is a bug: Starlette re-raises it after this answer and the server logs the
    # traceback; the client learns nothing internal.
    return InternalError()


def _version() -> str:
    try:
        return version("vit-service")
    except PackageNotFoundError:
        return "0+unknown"
