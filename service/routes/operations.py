"""Health and metrics: always open, read from the runtime's one readiness state."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service.edge.deps import RuntimeDep
from service.edge.responses import error_response
from service.edge.schemas import Health, error_responses
from vit_core.errors import NotReady

router = APIRouter()


@router.get(
    "/healthz",
    response_model=Health,
    summary="Alive (503 only when this instance cannot recover)",
    responses=error_responses(503),
)
async def healthz(request: Request, runtime: RuntimeDep) -> Health | JSONResponse:
    if not runtime.alive:
        return error_response(NotReady(runtime.status()), request.url.path)
    return Health(status="alive")


@router.get(
    "/readyz", response_model=Health, summary="Ready for traffic", responses=error_responses(503)
)
async def readyz(request: Request, runtime: RuntimeDep) -> Health | JSONResponse:
    if not runtime.ready:
        return error_response(NotReady(runtime.status()), request.url.path)
    return Health(status="ready")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    body, content_type = runtime.metrics.render()
    return Response(body, media_type=content_type)
