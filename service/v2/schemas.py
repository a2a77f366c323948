"""The Open Inference Protocol's (KServe v2) wire shapes: the JSON of requests, answers and
metadata, the tensor names this model takes and answers, and the model's metadata. infer.py
turns these into what the pipeline runs and back.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field

from vit_core.bundle import EMBEDDING, INPUT, LOGITS, BundleManifest

IMAGE: Final = "image"
PIXELS: Final = INPUT
PROBABILITIES: Final = "probabilities"
OUTPUT_NAMES: Final = (LOGITS, PROBABILITIES, EMBEDDING)  # a model with a classification head
PLATFORM = "onnxruntime_onnx"  # Triton's name for the backend that runs these graphs
EXTENSIONS = ["binary_tensor_data", "classification"]

# What one request's JSON may hold, checked while pydantic validates it (422): each far above
# what a valid request has, so a client learns its mistake, but small enough that neither the
# answer nor an error quoting it can grow with the body. (infer.py counts the whole document's
# values, lists, objects and keys before pydantic starts: a dict's size is only checked once
# built.)
MAX_NAME_CHARS = 256  # a name, datatype, id, parameter key or text value: ours have ≤ 13
MAX_TENSORS = 16  # inputs or outputs listed: the model takes 1 and answers 3
MAX_PARAMETERS = 16  # entries in one parameters object: the protocol's extensions define 4
MAX_DIMS = 8  # a shape's length: the tensors here have 1, 2 or 4 axes
MAX_DIM = 2**31 - 1  # one axis: a batch is ≤ max_images_per_request, a side a model's size

Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]
Parameters = dict[Name, Name | int | float | bool]
RequestParameters = Annotated[Parameters, Field(max_length=MAX_PARAMETERS)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestInput(_Wire):
    name: Name
    shape: list[Annotated[int, Field(ge=0, le=MAX_DIM)]] = Field(
        max_length=MAX_DIMS, description="the first axis is the batch"
    )
    datatype: Name
    parameters: RequestParameters = Field(default_factory=dict)
    data: list[Any] | None = Field(
        default=None, description="flat or nested; absent with binary_data_size"
    )


class RequestOutput(_Wire):
    name: Name
    parameters: RequestParameters = Field(
        default_factory=dict, description="binary_data: bool, classification: top-k as BYTES"
    )


class InferenceRequest(_Wire):
    id: Name | None = None
    parameters: RequestParameters = Field(
        default_factory=dict, description="binary_data_output: bool"
    )
    inputs: list[RequestInput] = Field(min_length=1, max_length=MAX_TENSORS)
    outputs: list[RequestOutput] | None = Field(None, max_length=MAX_TENSORS)


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata] = Field(description="send one of these")
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters | None = Field(default=None, description="binary_data_size, if binary")
    data: list[Any] | None = Field(
        default=None, description="row-major, flattened; absent if binary"
    )


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


def pixels_tensor(m: BundleManifest) -> tuple[str, list[int]]:
    """The pixels input's datatype and shape after B: the graph's own input, as model.json says
    ("UINT8", [S, S, 3]: decoded and resized, not normalised; "FP32", [3, S, S]: normalised)."""
    return ("UINT8" if m.pixels.dtype == "uint8" else "FP32"), m.pixels.shape(m.image_hw)


def output_names(m: BundleManifest) -> tuple[str, ...]:
    """What this model answers: class scores only where it has a head (DINOv2, CLIP and SigLIP
    as released embed and nothing else)."""
    return OUTPUT_NAMES if m.has_head else (EMBEDDING,)


def model_metadata(m: BundleManifest) -> ModelMetadata:
    (datatype, row), tensor = pixels_tensor(m), TensorMetadata
    widths = {LOGITS: len(m.labels), PROBABILITIES: len(m.labels), EMBEDDING: m.embedding.dim}
    return ModelMetadata(
        name=m.name,
        versions=[m.version],
        platform=PLATFORM,
        inputs=[tensor(name=IMAGE, datatype="BYTES", shape=[-1]),
                tensor(name=PIXELS, datatype=datatype, shape=[-1, *row])],
        outputs=[tensor(name=n, datatype="FP32", shape=[-1, widths[n]]) for n in output_names(m)],
    )  # fmt: skip
