"""The Open Inference Protocol (KServe v2) beside the native API: same batcher, limits, metrics and
API key; errors in the protocol's shape, {"error": "<message>"}, with the native statuses.

    GET  /v2/health/live, /v2/health/ready                  probes: open, like /healthz /readyz
    GET  /v2                                                server metadata      } behind the API
    GET  /v2/models/{name}[/versions/{version}]             model metadata       } key, when the
    GET  /v2/models/{name}[/versions/{version}]/ready       model ready          } service has one
    POST /v2/models/{name}[/versions/{version}]/infer       inference            }

The model's name and version are the bundle's; any other is a 404. Health answers 200 with an empty
body, or 503 with the reason (the protocol says "4xx"; 503 is what a probe and the native routes
mean by "not yet", and what tritonclient and Kubernetes read as false all the same).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.types import DecoratedCallable

from service.edge.deps import RuntimeDep, V2Job, V2JobDep
from service.edge.middleware import timing_headers
from service.edge.responses import error_response
from service.edge.schemas import V2ErrorBody, error_responses
from service.runtime import Runtime
from service.v2.infer import encode_response
from service.v2.schemas import (
    EXTENSIONS,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ServerMetadata,
    model_metadata,
)
from vit_core.bundle import FAST, BundleManifest
from vit_core.errors import NotFound, NotReady, excerpt

probes_router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (v2)"])
router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (v2)"])

INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            "The JSON inference request; with the binary tensor data extension, raw tensor bytes "
            "follow it and Inference-Header-Content-Length gives the JSON's length."
        ),
        "content": {
            "application/json": {"schema": InferenceRequest.model_json_schema()},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
INFER_OCTETS: dict[int | str, dict[str, Any]] = {200: {"content": {"application/octet-stream": {}}}}


def v2_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return error_responses(*statuses, body=V2ErrorBody)


INFER_ERRORS = v2_errors(400, 401, 404, 413, 415, 422, 429, 500, 503, 504)
EMPTY_200: dict[int | str, dict[str, Any]] = {200: {"description": "true (empty body)"}}


async def _model(
    runtime: RuntimeDep, name: Annotated[str, Path(description="the bundle's name")]
) -> BundleManifest:
    m = runtime.manifest
    if name != m.name:
        raise NotFound(f"no model {excerpt(name)!r}; this server serves {m.name!r}")
    return m


async def _version(
    manifest: Annotated[BundleManifest, Depends(_model)],
    version: Annotated[str, Path(description="the bundle's version")],
) -> BundleManifest:
    if version != manifest.version:
        raise NotFound(
            f"model {manifest.name!r} has no version {excerpt(version)!r}; "
            f"it has {manifest.version!r}"
        )
    return manifest


ModelDep = Annotated[BundleManifest, Depends(_model)]
VersionDep = Annotated[BundleManifest, Depends(_version)]


def _health(request: Request, runtime: Runtime, ok: bool) -> Response:
    if ok:
        return Response(status_code=200)
    return error_response(NotReady(runtime.status()), request.url.path)


@probes_router.get(
    "/health/live",
    response_class=Response,  # 200 has no body
    responses={**EMPTY_200, **v2_errors(503)},
    summary="Live",
)
async def live(request: Request, runtime: RuntimeDep) -> Response:
    return _health(request, runtime, runtime.alive)


@probes_router.get(
    "/health/ready",
    response_class=Response,
    responses={**EMPTY_200, **v2_errors(503)},
    summary="Ready",
)
async def ready(request: Request, runtime: RuntimeDep) -> Response:
    return _health(request, runtime, runtime.ready)


@router.get("", summary="Server metadata", responses=v2_errors(401))
async def server_metadata(request: Request) -> ServerMetadata:
    app = request.app
    return ServerMetadata(name=app.title, version=app.version, extensions=EXTENSIONS)


METADATA = v2_errors(401, 404)


@router.get("/models/{name}", summary="Model metadata", responses=METADATA)
async def metadata(manifest: ModelDep) -> ModelMetadata:
    return model_metadata(manifest)


@router.get("/models/{name}/versions/{version}", summary="Model metadata", responses=METADATA)
async def version_metadata(manifest: VersionDep) -> ModelMetadata:
    return model_metadata(manifest)


READY = {**EMPTY_200, **v2_errors(401, 404, 503)}


@router.get("/models/{name}/ready", summary="Model ready", responses=READY, response_class=Response)
async def model_ready(request: Request, runtime: RuntimeDep, manifest: ModelDep) -> Response:
    return _health(request, runtime, runtime.ready)


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model ready",
    responses=READY,
    response_class=Response,
)
async def version_ready(request: Request, runtime: RuntimeDep, manifest: VersionDep) -> Response:
    return _health(request, runtime, runtime.ready)


def _infer_route(path: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    return router.post(
        path,
        response_model=InferenceResponse,
        openapi_extra=INFER_BODY,
        responses={**INFER_OCTETS, **INFER_ERRORS},
        summary="Images (BYTES) or pixels (UINT8) in; logits, probabilities, embedding out",
    )


@_infer_route("/models/{name}/infer")
async def infer(manifest: ModelDep, v2_job: V2JobDep) -> Response:
    return await _infer(v2_job, manifest)


@_infer_route("/models/{name}/versions/{version}/infer")
async def version_infer(manifest: VersionDep, v2_job: V2JobDep) -> Response:
    return await _infer(v2_job, manifest)


async def _infer(v2_job: V2Job, manifest: BundleManifest) -> Response:
    outcome = await v2_job.job.run(FAST)
    response = encode_response(v2_job.inference, manifest, outcome.outputs)
    response.headers.update(timing_headers(outcome))
    return response
