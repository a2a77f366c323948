"""The Open Inference Protocol's (KServe v2) wire shapes: the JSON of requests, answers and
metadata, the tensor names this model takes and answers, and the model's metadata. protocol.py
turns these into what the pipeline runs and back.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field

from vit_core.bundle import EMBEDDING, INPUT, LOGITS, BundleManifest

IMAGE: Final = "image"
PIXELS: Final = INPUT
PROBABILITIES: Final = "probabilities"
OUTPUT_NAMES: Final = (LOGITS, PROBABILITIES, EMBEDDING)
PLATFORM = "onnxruntime_onnx"  # Triton's name for the backend that runs these graphs
EXTENSIONS = ["binary_tensor_data", "classification"]

Parameters = dict[str, str | int | float | bool]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestInput(_Wire):
    name: str
    shape: list[Annotated[int, Field(ge=0)]] = Field(description="the first axis is the batch")
    datatype: str
    parameters: Parameters = Field(default_factory=dict)
    data: list[Any] | None = Field(
        default=None, description="flat or nested; absent with binary_data_size"
    )


class RequestOutput(_Wire):
    name: str
    parameters: Parameters = Field(
        default_factory=dict, description="binary_data: bool, classification: top-k as BYTES"
    )


class InferenceRequest(_Wire):
    id: str | None = None
    parameters: Parameters = Field(default_factory=dict, description="binary_data_output: bool")
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


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


def model_metadata(m: BundleManifest) -> ModelMetadata:
    (datatype, row), tensor = pixels_tensor(m), TensorMetadata
    return ModelMetadata(
        name=m.name,
        versions=[m.version],
        platform=PLATFORM,
        inputs=[tensor(name=IMAGE, datatype="BYTES", shape=[-1]),
                tensor(name=PIXELS, datatype=datatype, shape=[-1, *row])],
        outputs=[tensor(name=LOGITS, datatype="FP32", shape=[-1, len(m.labels)]),
                 tensor(name=PROBABILITIES, datatype="FP32", shape=[-1, len(m.labels)]),
                 tensor(name=EMBEDDING, datatype="FP32", shape=[-1, m.dim])],
    )  # fmt: skip
