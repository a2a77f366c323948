"""Response bodies, and the OpenAPI descriptions of the request forms and error answers."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import BaseModel, Field

from service.edge.inputs import ImagesJSON
from vit_core.bundle import AttentionKind, Backbone, EmbeddingSpec
from vit_core.errors import STATUS, all_errors, status_of


class ModelRef(BaseModel):
    name: str
    version: str


class Prediction(BaseModel):
    label: str
    index: int = Field(description="class index in the model's head")
    score: float = Field(description="softmax probability")


class Classification(BaseModel):
    predictions: list[Prediction] = Field(description="the top-k classes, most probable first")


class ClassifyResponse(BaseModel):
    model: ModelRef
    results: list[Classification] = Field(description="one per image, in request order")


class Embedding(BaseModel):
    index: int
    embedding: list[float] | str = Field(
        description="D floats, or with encoding=base64 the little-endian float32 bytes in base64"
    )


class EmbedResponse(BaseModel):
    model: ModelRef
    dim: int = Field(description="E, the published embedding's width (/model's embedding.dim)")
    normalized: bool = Field(
        description="unit L2 norm: asked for (normalize=true), or how the model publishes it "
        "(CLIP: /model's embedding.normalized)"
    )
    encoding: str
    results: list[Embedding] = Field(description="one per image, in request order")


class AttentionMap(BaseModel):
    attention: list[list[float]] = Field(
        description="rollout over the patch grid, rows top to bottom, scaled to [0, 1]"
    )
    prediction: Prediction | None = Field(
        description="the top-1 class; null for a model without a classification head"
    )


class AttentionResponse(BaseModel):
    model: ModelRef
    grid: tuple[int, int] = Field(
        description="patch grid (rows, columns); class, distillation and register tokens are "
        "never on it"
    )
    attention: AttentionKind = Field(
        description="what the map shows: rollout, the attention rollout read at the class "
        "token; pooling, the attention-pooling head's weights over the patches (SigLIP, which "
        "has no class token), averaged over heads"
    )
    results: list[AttentionMap] = Field(description="one per image, in request order")


class Batching(BaseModel):
    lanes: int = Field(
        description="batches the engine runs at once: VIT_ENGINE_LANES, or unset one per usable "
        "core on a CPU (each beside others on one core, alone on every core) and 1 on a GPU"
    )
    max_batch_size: int = Field(
        description="most images per ONNX Runtime call: VIT_MAX_BATCH_SIZE, or chosen at warm-up"
    )
    batch_size_measured: dict[str, float] = Field(
        description="images/s of the fast graph at each batch size measured at warm-up with "
        "every lane running, when the size was chosen rather than pinned ({} when pinned)"
    )
    max_wait_ms: float = Field(
        description="longest wait for images on their way to join a batch: VIT_MAX_WAIT_MS, or "
        "unset 5 on a GPU and 0 on a CPU"
    )
    max_queue_images: int
    max_images_per_request: int
    request_timeout_s: float


class ModelInfo(BaseModel):
    name: str
    version: str
    labels: list[str] = Field(description="class names; [] for a model without a head")
    image_size: tuple[int, int] = Field(description="input [height, width] in pixels")
    patch_size: int = Field(description="patch side on the image, or on a hybrid's feature map")
    grid: tuple[int, int] = Field(description="patch tokens: [rows, cols]")
    backbone: Backbone | None = Field(description="a hybrid's ResNet; null for a plain ViT")
    dim: int = Field(description="the encoder's width D")
    embedding: EmbeddingSpec = Field(
        description="what /embed returns: its name (cls, cls_dist_mean, map, "
        "cls_projection, ...), width and whether it comes L2-normalised"
    )
    attention: AttentionKind = Field(description="what /attention's map shows (rollout, pooling)")
    layers: int
    heads: int
    precision: str
    graphs: list[str] = Field(description="fast (classify, embed) and, if present, explain")
    providers: list[str] = Field(description="ONNX Runtime providers in use, in priority order")
    decode: str = Field(
        description="where JPEGs become pixels: host (Pillow), or device (gpu) or device (cpu): "
        "nvImageCodec and a resize graph beside the model (VIT_DECODE)"
    )
    preprocess: dict[str, Any]
    batching: Batching


class Health(BaseModel):
    status: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class V2ErrorBody(BaseModel):
    """The Open Inference Protocol's error shape."""

    error: str


# -- OpenAPI ---------------------------------------------------------------------------------

IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "One or more images (JPEG, PNG, WebP, GIF (first frame), BMP, TIFF), in any of three "
            "forms. EXIF orientation is applied; grey, palette, CMYK, 16-bit and transparent "
            "images are converted to RGB (transparency over white)."
        ),
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "minItems": 1,
                            "description": "one file part per image (any field name), in order",
                        }
                    },
                    "required": ["file"],
                }
            },
            "image/*": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "one image's bytes; Content-Type image/jpeg, image/png, ...",
                },
            },
            "application/json": {"schema": ImagesJSON.model_json_schema()},
        },
    }
}


def error_responses(
    *statuses: int, body: type[BaseModel] = ErrorBody
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, each listing the error codes that use it."""
    codes: dict[int, list[str]] = defaultdict(list)
    for cls in all_errors():
        status = status_of(cls())
        if cls.code not in codes[status]:
            codes[status].append(cls.code)
    return {
        status: {
            "model": body,
            "description": "error codes: " + ", ".join(codes[status]),
        }
        for status in statuses
        if status in set(STATUS.values())
    }


INFERENCE_ERRORS = error_responses(400, 401, 413, 415, 422, 429, 500, 503, 504)
