"""create_app(settings): the FastAPI app, its lifespan (bundle → engine → batcher → warm-up), the
error handlers and the metrics middleware. The routes live in routes.py.

Start-up order: load and verify the bundle, open the ONNX Runtime sessions, then serve at once
while a background thread warms every batch size; /readyz turns 200 when that is done. Shut-down
(SIGTERM): uvicorn stops accepting and lets in-flight requests finish (drain_timeout_s), then the
batcher runs whatever is still queued and stops.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.batcher import Batcher
from service.bundle import load_bundle
from service.engine import Engine
from service.errors import (
    InternalError,
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    ServiceError,
)
from service.images import Preprocessor
from service.metrics import Metrics
from service.middleware import RequestMetrics
from service.pipeline import Pipeline
from service.routes import inference, operations, require_api_key
from service.settings import Settings
from service.warmup import Warmup

log = logging.getLogger(__name__)

DESCRIPTION = """\
Vision Transformer inference over HTTP: dynamic batching on ONNX Runtime.

Send images as **multipart/form-data** file parts, as a raw **image/\\*** body, or as **JSON**
`{"images": ["<base64 or data: URI>", ...]}`. Every error answers
`{"error": {"code": ..., "message": ...}}`; 429 and 503 carry Retry-After.
"""


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """The service for settings, over `engine` if given (else the lifespan opens one)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manifest = engine.manifest if engine else load_bundle(settings.bundle)
        runner = engine or Engine(settings.bundle, manifest, settings.providers)
        metrics.model_info.labels(
            manifest.name, manifest.version, runner.provider, manifest.precision
        ).set(1)
        batcher = Batcher(
            runner.run,
            graphs=manifest.graphs,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue_images=settings.max_queue_images,
            metrics=metrics,
        )
        executor = ThreadPoolExecutor(settings.preprocess_threads, "preprocess")
        preprocessor = Preprocessor(
            manifest.preprocess, manifest.image_size, settings.max_image_pixels
        )
        warmup = Warmup(runner, batcher, settings.max_batch_size)
        app.state.manifest, app.state.engine = manifest, runner
        app.state.batcher, app.state.warmup = batcher, warmup
        app.state.pipeline = Pipeline(preprocessor, batcher, executor, metrics)
        warmup.start()
        log.info(
            "serving %s v%s (%s, %s) from %s",
            manifest.name, manifest.version, manifest.precision, runner.provider, settings.bundle,
        )  # fmt: skip
        try:
            yield
        finally:
            warmup.stop(timeout=settings.drain_timeout_s)
            batcher.close(timeout=settings.drain_timeout_s)
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="vit-service",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings, app.state.metrics = settings, metrics
    app.add_middleware(RequestMetrics, metrics=metrics)
    _add_error_handlers(app, metrics)
    guard = [Depends(require_api_key)] if settings.api_key else []
    app.include_router(inference, dependencies=guard)
    app.include_router(operations)
    return app


def _add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def answer(error: ServiceError) -> JSONResponse:
        if not isinstance(error, InternalError):  # failures are counted where they happen
            metrics.rejections.labels(error.label).inc()
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers())

    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return answer(exc)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "query")
        return answer(InvalidParameter(f"{where}: {first['msg']}"))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        error: ServiceError
        if exc.status_code == 404:
            error = NotFound(f"no route {request.url.path}")
        elif exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        else:
            return JSONResponse(
                {"error": {"code": "http_error", "message": str(exc.detail)}}, exc.status_code
            )
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers())

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this answer, and the server logs the traceback.
        error = InternalError()
        return JSONResponse(error.body(), status_code=error.status)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _version() -> str:
    try:
        return version("vit-service")
    except PackageNotFoundError:
        return "0+unknown"
