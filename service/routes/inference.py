"""The native API: /classify, /embed, /attention and /model. Each route runs its job on a graph
and shapes the rows that come back; everything else happens in the dependencies."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Response
from starlette.concurrency import run_in_threadpool

from service.edge.deps import JobDep, RuntimeDep
from service.edge.middleware import timing_headers
from service.edge.schemas import (
    IMAGE_BODY,
    INFERENCE_ERRORS,
    AttentionMap,
    AttentionResponse,
    Batching,
    Classification,
    ClassifyResponse,
    Embedding,
    EmbedResponse,
    ModelInfo,
    ModelRef,
    Prediction,
    error_responses,
)
from service.inference.outputs import encode_base64, l2_normalize, softmax, top_k
from vit_core.attention import overlay_png, rollout_grid
from vit_core.bundle import EMBEDDING, EXPLAIN, FAST, LOGITS, ROLLOUT, BundleManifest
from vit_core.errors import AttentionUnavailable, ClassificationUnavailable, InvalidParameter

router = APIRouter()


async def _classifies(runtime: RuntimeDep) -> None:
    if not runtime.manifest.has_head:
        raise ClassificationUnavailable(
            "this model has no classification head; POST /embed gives its embedding"
        )


async def _explains(runtime: RuntimeDep) -> None:
    if EXPLAIN not in runtime.manifest.graphs:
        raise AttentionUnavailable("this bundle has no explain graph (explain.onnx)")


def _ref(manifest: BundleManifest) -> ModelRef:
    return ModelRef(name=manifest.name, version=manifest.version)


def _predictions(logits: np.ndarray, k: int, labels: list[str]) -> list[list[Prediction]]:
    """(B, K) logits → per image, the k most probable classes, most probable first."""
    probs = softmax(logits)
    return [
        [Prediction(label=labels[i], index=int(i), score=float(p[i])) for i in order]
        for p, order in zip(probs, top_k(probs, k), strict=True)
    ]


@router.post(
    "/classify",
    dependencies=[Depends(_classifies)],  # before the body is read
    openapi_extra=IMAGE_BODY,
    responses={**INFERENCE_ERRORS, **error_responses(501)},
    summary="Top-k classes per image",
)
async def classify(
    job: JobDep,
    runtime: RuntimeDep,
    response: Response,
    top: Annotated[int, Query(alias="top_k", ge=1, description="classes per image")] = 5,
) -> ClassifyResponse:
    manifest = runtime.manifest
    outcome = await job.run(FAST)
    response.headers.update(timing_headers(outcome))
    predictions = _predictions(outcome.outputs[LOGITS], top, manifest.labels)
    results = [Classification(predictions=p) for p in predictions]
    return ClassifyResponse(model=_ref(manifest), results=results)


@router.post(
    "/embed",
    openapi_extra=IMAGE_BODY,
    responses=INFERENCE_ERRORS,
    summary="The model's published embedding per image (/model's embedding says which)",
)
async def embed(
    job: JobDep,
    runtime: RuntimeDep,
    response: Response,
    normalize: Annotated[bool, Query(description="scale each embedding to unit L2 norm")] = False,
    encoding: Annotated[Literal["float", "base64"], Query(description="base64: LE float32")] = (
        "float"
    ),
) -> EmbedResponse:
    outcome = await job.run(FAST)
    response.headers.update(timing_headers(outcome))
    vectors = outcome.outputs[EMBEDDING]  # (B, D)
    if normalize:
        vectors = l2_normalize(vectors)
    results = [
        Embedding(index=i, embedding=encode_base64(v) if encoding == "base64" else v.tolist())
        for i, v in enumerate(vectors)
    ]
    manifest = runtime.manifest
    published = manifest.embedding  # its width, and whether the graph normalised it (CLIP)
    return EmbedResponse(
        model=_ref(manifest), dim=published.dim, normalized=normalize or published.normalized,
        encoding=encoding, results=results,
    )  # fmt: skip


@router.post(
    "/attention",
    dependencies=[Depends(_explains)],  # before the body is read
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
    job: JobDep,
    runtime: RuntimeDep,
    response: Response,
    format: Annotated[Literal["json", "png"], Query(description="png: one image")] = "json",
) -> AttentionResponse | Response:
    manifest = runtime.manifest
    if format == "png" and len(job.inputs) != 1:
        raise InvalidParameter("format=png answers one image per request")
    outcome = await job.run(EXPLAIN, keep_images=format == "png")
    timings = timing_headers(outcome)
    outputs = outcome.outputs
    maps = [rollout_grid(r, manifest.grid) for r in outputs[ROLLOUT]]  # each (rows, cols)
    if format == "png":
        p = outcome.pictures[0]
        png = await run_in_threadpool(overlay_png, p.image, p.box, maps[0])  # off the event loop
        return Response(png, media_type="image/png", headers=timings)
    response.headers.update(timings)
    best: list[Prediction | None] = [None] * len(maps)  # a model without a head predicts nothing
    if manifest.has_head:
        best = [row[0] for row in _predictions(outputs[LOGITS], 1, manifest.labels)]
    results = [
        AttentionMap(attention=m.tolist(), prediction=b) for m, b in zip(maps, best, strict=True)
    ]
    return AttentionResponse(
        model=_ref(manifest), grid=manifest.grid, attention=manifest.attention, results=results
    )


@router.get("/model", responses=error_responses(401), summary="The model being served and how")
async def model(runtime: RuntimeDep) -> ModelInfo:
    m, s, engine = runtime.manifest, runtime.settings, await runtime.engine_info()
    return ModelInfo(
        name=m.name,
        version=m.version,
        labels=m.labels,
        image_size=m.image_hw,
        patch_size=m.patch_size,
        grid=m.grid,
        backbone=m.backbone,
        dim=m.dim,
        embedding=m.embedding,
        attention=m.attention,
        layers=m.depth,
        heads=m.heads,
        precision=m.precision,
        graphs=list(m.graphs),
        providers=engine["providers"],
        decode=engine["decode"],
        preprocess=m.preprocess.model_dump(),
        batching=Batching(
            lanes=engine["lanes"],
            max_batch_size=engine["max_batch_size"],
            batch_size_measured=engine["batch_size_measured"],
            max_wait_ms=engine["max_wait_ms"],
            max_queue_images=s.max_queue_images,
            max_images_per_request=s.max_images_per_request,
            request_timeout_s=s.request_timeout_s,
        ),
    )
