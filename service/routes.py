"""The HTTP routes: inputs arrive through dependencies, the pipeline runs, the answer is shaped.

`operations` are always open; `inference` (and /model) sit behind the API key when one is set.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from service.attention import overlay_png, rollout_grid
from service.batcher import Batcher, BatchResult
from service.bundle import EXPLAIN, FAST, BundleManifest
from service.engine import Engine
from service.errors import (
    AttentionUnavailable,
    InvalidParameter,
    NotReady,
    RequestTimeout,
    Unauthorized,
)
from service.inputs import Limits, media_type, read_images
from service.metrics import Metrics
from service.outputs import encode_base64, l2_normalize, top_k
from service.pipeline import Outcome, Pipeline
from service.schemas import (
    IMAGE_BODY,
    INFERENCE_ERRORS,
    AttentionMap,
    AttentionResponse,
    Batching,
    Classification,
    ClassifyResponse,
    Embedding,
    EmbedResponse,
    ErrorBody,
    Health,
    ModelInfo,
    ModelRef,
    error_responses,
)
from service.settings import Settings
from service.warmup import Warmup

WATCH_AFTER_S = 0.05  # a client that leaves is noticed after at most this long in the queue

# -- dependencies: what a route may ask for ---------------------------------------------------
# All async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request.


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def _manifest(request: Request) -> BundleManifest:
    manifest: BundleManifest = request.app.state.manifest
    return manifest


async def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def _pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


SettingsDep = Annotated[Settings, Depends(_settings)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
ManifestDep = Annotated[BundleManifest, Depends(_manifest)]
PipelineDep = Annotated[Pipeline, Depends(_pipeline)]
EngineDep = Annotated[Engine, Depends(_engine)]
_bearer = HTTPBearer(auto_error=False, description="VIT_API_KEY, when the service has one")


async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    key = settings.api_key
    if key is None:
        return
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise Unauthorized("missing or wrong API key; send Authorization: Bearer <key>")


@dataclass(frozen=True)
class Upload:
    images: list[bytes]
    deadline: float  # event-loop time by which the answer must be on its way


async def _upload(request: Request, settings: SettingsDep, pipeline: PipelineDep) -> Upload:
    """The request's images, read under the request's deadline (a trickling body is a timeout).

    A full queue is refused before the body is read: under overload that is most requests.
    """
    timeout = settings.request_timeout_s
    deadline = asyncio.get_running_loop().time() + timeout
    media = media_type(request)
    pipeline.check_room()
    limits = Limits(settings.max_body_bytes, settings.max_images_per_request)
    try:
        images = await asyncio.wait_for(read_images(request, media, limits), timeout)
    except TimeoutError as e:
        raise RequestTimeout("the request body did not arrive within the deadline") from e
    return Upload(images, deadline)


async def _disconnected(request: Request) -> None:
    """Completes when the client goes away (the body is already read, so this only waits).

    It starts listening only after WATCH_AFTER_S: asking the server to watch the socket again
    costs a system call or two per request, worth paying only for requests that have to wait.
    """
    await asyncio.sleep(WATCH_AFTER_S)
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Infer:
    """Runs the request's images through the pipeline; sets the timing headers and counts."""

    def __init__(
        self,
        request: Request,
        response: Response,
        upload: Upload,
        pipeline: Pipeline,
        metrics: Metrics,
    ) -> None:
        self._request, self._response, self._upload = request, response, upload
        self._pipeline, self._metrics = pipeline, metrics
        self.headers: dict[str, str] = {}

    @property
    def count(self) -> int:
        return len(self._upload.images)

    async def __call__(self, graph: str, keep_images: bool = False) -> Outcome:
        outcome = await self._pipeline.run(
            graph,
            self._upload.images,
            deadline=self._upload.deadline,
            disconnected=_disconnected(self._request),
            keep_images=keep_images,
        )
        self.headers = timing_headers(outcome.result)
        self._response.headers.update(self.headers)
        endpoint = self._request.url.path
        self._metrics.images.labels(endpoint).inc(len(self._upload.images))
        return outcome


async def _infer(
    request: Request,
    response: Response,
    upload: Annotated[Upload, Depends(_upload)],
    pipeline: PipelineDep,
    metrics: MetricsDep,
) -> Infer:
    return Infer(request, response, upload, pipeline, metrics)


InferDep = Annotated[Infer, Depends(_infer)]


def timing_headers(result: BatchResult) -> dict[str, str]:
    return {
        "X-Queue-Time-Ms": f"{result.queue_s * 1000:.2f}",
        "X-Inference-Time-Ms": f"{result.inference_s * 1000:.2f}",
    }


def _ref(manifest: BundleManifest) -> ModelRef:
    return ModelRef(name=manifest.name, version=manifest.version)


# -- inference routes ---------------------------------------------------------------------------

inference = APIRouter()


@inference.post(
    "/classify",
    openapi_extra=IMAGE_BODY,
    responses=INFERENCE_ERRORS,
    summary="Top-k classes per image",
)
async def classify(
    infer: InferDep,
    manifest: ManifestDep,
    top: Annotated[int, Query(alias="top_k", ge=1, description="classes per image")] = 5,
) -> ClassifyResponse:
    outcome = await infer(FAST)
    predictions = top_k(outcome.result.outputs["logits"], top, manifest.labels)
    results = [Classification(predictions=p) for p in predictions]
    return ClassifyResponse(model=_ref(manifest), results=results)


@inference.post(
    "/embed",
    openapi_extra=IMAGE_BODY,
    responses=INFERENCE_ERRORS,
    summary="The [CLS] embedding per image",
)
async def embed(
    infer: InferDep,
    manifest: ManifestDep,
    normalize: Annotated[bool, Query(description="scale each embedding to unit L2 norm")] = False,
    encoding: Annotated[Literal["float", "base64"], Query(description="base64: LE float32")] = (
        "float"
    ),
) -> EmbedResponse:
    vectors = (await infer(FAST)).result.outputs["embedding"]  # (B, D)
    if normalize:
        vectors = l2_normalize(vectors)
    results = [
        Embedding(index=i, embedding=encode_base64(v) if encoding == "base64" else v.tolist())
        for i, v in enumerate(vectors)
    ]
    return EmbedResponse(
        model=_ref(manifest),
        dim=manifest.dim,
        normalized=normalize,
        encoding=encoding,
        results=results,
    )


@inference.post(
    "/attention",
    response_model=AttentionResponse,
    openapi_extra=IMAGE_BODY,
    summary="Attention rollout per image, as a grid or a heat-map PNG",
    responses={
        200: {
            "content": {"image/png": {}},
            "description": "JSON, or with format=png the (one) image with the map overlaid",
        },
        **INFERENCE_ERRORS,
        **error_responses(501),
    },
)
async def attention(
    infer: InferDep,
    manifest: ManifestDep,
    format: Annotated[Literal["json", "png"], Query(description="png: one image")] = "json",
) -> AttentionResponse | Response:
    if EXPLAIN not in manifest.graphs:
        raise AttentionUnavailable("this bundle has no explain graph (explain.onnx)")
    if format == "png" and infer.count != 1:
        raise InvalidParameter("format=png answers one image per request")
    outcome = await infer(EXPLAIN, keep_images=format == "png")
    outputs = outcome.result.outputs
    maps = [rollout_grid(r, manifest.grid) for r in outputs["rollout"]]  # each (g, g)
    if format == "png":
        p = outcome.prepared[0]
        assert p.image is not None
        png = await run_in_threadpool(overlay_png, p.image, p.box, maps[0])  # off the event loop
        return Response(png, media_type="image/png", headers=infer.headers)
    best = [row[0] for row in top_k(outputs["logits"], 1, manifest.labels)]
    results = [
        AttentionMap(attention=m.tolist(), prediction=b) for m, b in zip(maps, best, strict=True)
    ]
    return AttentionResponse(model=_ref(manifest), grid=(manifest.grid,) * 2, results=results)


@inference.get("/model", responses=error_responses(401), summary="The model being served and how")
async def model(manifest: ManifestDep, settings: SettingsDep, engine: EngineDep) -> ModelInfo:
    m, s = manifest, settings
    return ModelInfo(
        name=m.name,
        version=m.version,
        labels=m.labels,
        image_size=m.image_size,
        patch_size=m.patch_size,
        grid=m.grid,
        dim=m.dim,
        layers=m.depth,
        heads=m.heads,
        precision=m.precision,
        graphs=list(m.graphs),
        providers=engine.providers,
        preprocess=m.preprocess.model_dump(),
        batching=Batching(
            max_batch_size=s.max_batch_size,
            max_wait_ms=s.max_wait_ms,
            max_queue_images=s.max_queue_images,
            max_images_per_request=s.max_images_per_request,
            request_timeout_s=s.request_timeout_s,
        ),
    )


# -- operations routes (always open) -----------------------------------------------------------

operations = APIRouter()


@operations.get(
    "/healthz",
    response_model=Health,
    summary="Alive (503 only when this instance cannot recover)",
    responses={503: {"model": ErrorBody}},
)
async def healthz(request: Request) -> Health | JSONResponse:
    batcher: Batcher = request.app.state.batcher
    warmup: Warmup = request.app.state.warmup
    if batcher.state == "dead" or warmup.failed:
        why = warmup.status() if warmup.failed else "the batch worker has stopped"
        return _unavailable(why)
    return Health(status="alive")


@operations.get(
    "/readyz", response_model=Health, summary="Ready for traffic", responses=error_responses(503)
)
async def readyz(request: Request) -> Health | JSONResponse:
    batcher: Batcher = request.app.state.batcher
    warmup: Warmup = request.app.state.warmup
    if batcher.alive:
        return Health(status="ready")
    return _unavailable(warmup.status() if batcher.state == "new" else batcher.unavailable)


def _unavailable(message: str) -> JSONResponse:
    error = NotReady(message)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


@operations.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
