"""Health and metrics: always open, read from the runtime's one readiness state."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.deps import RuntimeDep
from service.errors import NotReady, error_response
from service.schemas import Health, error_responses

operations = APIRouter()


@operations.get(
    "/healthz",
    response_model=Health,
    summary="Alive (503 only when this instance cannot recover)",
    responses=error_responses(503),
)
async def healthz(runtime: RuntimeDep) -> Health | JSONResponse:
    if not runtime.alive:
        return error_response(NotReady(runtime.status()))
    return Health(status="alive")


@operations.get(
    "/readyz", response_model=Health, summary="Ready for traffic", responses=error_responses(503)
)
async def readyz(runtime: RuntimeDep) -> Health | JSONResponse:
    if not runtime.ready:
        return error_response(NotReady(runtime.status()))
    return Health(status="ready")


@operations.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    body, content_type = runtime.metrics.render()
    return Response(body, media_type=content_type)
