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

from service.bundle import FAST, BundleManifest
from service.deps import InferJob, InferJobDep, RuntimeDep
from service.errors import NotFound, NotReady, error_response
from service.protocol import encode_response
from service.protocol_schemas import (
    EXTENSIONS,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ServerMetadata,
    model_metadata,
)
from service.runtime import Runtime
from service.schemas import V2ErrorBody, error_responses

probes = APIRouter(prefix="/v2", tags=["Open Inference Protocol (v2)"])
v2 = APIRouter(prefix="/v2", tags=["Open Inference Protocol (v2)"])

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
        raise NotFound(f"no model {name!r}; this server serves {m.name!r}")
    return m


async def _version(
    manifest: Annotated[BundleManifest, Depends(_model)],
    version: Annotated[str, Path(description="the bundle's version")],
) -> BundleManifest:
    if version != manifest.version:
        raise NotFound(
            f"model {manifest.name!r} has no version {version!r}; it has {manifest.version!r}"
        )
    return manifest


ModelDep = Annotated[BundleManifest, Depends(_model)]
VersionDep = Annotated[BundleManifest, Depends(_version)]


def _health(runtime: Runtime, ok: bool) -> Response:
    return Response(status_code=200) if ok else error_response(NotReady(runtime.status()), "v2")


@probes.get(
    "/health/live",
    response_class=Response,  # 200 has no body
    responses={**EMPTY_200, **v2_errors(503)},
    summary="Live",
)
async def live(runtime: RuntimeDep) -> Response:
    return _health(runtime, runtime.alive)


@probes.get(
    "/health/ready",
    response_class=Response,
    responses={**EMPTY_200, **v2_errors(503)},
    summary="Ready",
)
async def ready(runtime: RuntimeDep) -> Response:
    return _health(runtime, runtime.ready)


@v2.get("", summary="Server metadata", responses=v2_errors(401))
async def server_metadata(request: Request) -> ServerMetadata:
    app = request.app
    return ServerMetadata(name=app.title, version=app.version, extensions=EXTENSIONS)


METADATA = v2_errors(401, 404)


@v2.get("/models/{name}", summary="Model metadata", responses=METADATA)
async def metadata(manifest: ModelDep) -> ModelMetadata:
    return model_metadata(manifest)


@v2.get("/models/{name}/versions/{version}", summary="Model metadata", responses=METADATA)
async def version_metadata(manifest: VersionDep) -> ModelMetadata:
    return model_metadata(manifest)


READY = {**EMPTY_200, **v2_errors(401, 404, 503)}


@v2.get("/models/{name}/ready", summary="Model ready", responses=READY, response_class=Response)
async def model_ready(runtime: RuntimeDep, manifest: ModelDep) -> Response:
    return _health(runtime, runtime.ready)


@v2.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model ready",
    responses=READY,
    response_class=Response,
)
async def version_ready(runtime: RuntimeDep, manifest: VersionDep) -> Response:
    return _health(runtime, runtime.ready)


def _infer_route(path: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    return v2.post(
        path,
        response_model=InferenceResponse,
        openapi_extra=INFER_BODY,
        responses={**INFER_OCTETS, **INFER_ERRORS},
        summary="Images (BYTES) or pixels (UINT8) in; logits, probabilities, embedding out",
    )


@_infer_route("/models/{name}/infer")
async def infer(manifest: ModelDep, job: InferJobDep) -> Response:
    return await _infer(job)


@_infer_route("/models/{name}/versions/{version}/infer")
async def version_infer(manifest: VersionDep, job: InferJobDep) -> Response:
    return await _infer(job)


async def _infer(job: InferJob) -> Response:
    outcome = await job.run(FAST)
    return encode_response(job.inference, job.runtime.manifest, outcome.result.outputs)
