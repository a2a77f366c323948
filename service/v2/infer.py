"""The Open Inference Protocol (KServe v2): its JSON shapes, a request body turned into what the
pipeline runs, and the rows that come back turned into the protocol's answer.

The wire shapes (JSON models, tensor names, metadata) are in protocol_schemas.py.
A request carries one input tensor:
    image    BYTES [B] or [B, 1]    one encoded image per element (JPEG, PNG, …), decoded and
                                    preprocessed as every upload is (JSON data: base64 strings)
    pixels   UINT8 [B, S, S, 3]     the graph's own input, straight to the batcher: decoded and
                                    resized as model.json says (the graph normalises); bundles
                                    of schema 1 take FP32 [B, 3, S, S], normalised too
and names any of the outputs logits [B, K], probabilities [B, K] and embedding [B, D] (all three
when it names none). Tensors travel as JSON `data` or, with the binary tensor data extension, as
raw bytes after the JSON (tensors.py). An output's `classification: k` parameter answers BYTES
[B, k] of "value:index:label", highest first (Triton's classification extension).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from pydantic import ValidationError
from starlette.responses import Response

from service.edge.inputs import Limits, base64_image, check_count
from service.inference.outputs import softmax, top_k
from service.inference.pipeline import Inputs
from service.v2.schemas import (
    IMAGE,
    OUTPUT_NAMES,
    PIXELS,
    PROBABILITIES,
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestInput,
    ResponseOutput,
    pixels_tensor,
)
from service.v2.wire import HEADER_LENGTH, decompress, pack_bytes, split_body, unpack_bytes
from vit_core.bundle import EMBEDDING, LOGITS, BundleManifest
from vit_core.errors import (
    EmptyBody,
    InvalidParameter,
    PayloadTooLarge,
    describe_validation,
)

T = TypeVar("T", int, bool)

# -- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    name: str
    binary: bool
    classes: int  # 0: the tensor itself; k: the top-k classes as BYTES


@dataclass(frozen=True)
class Inference:
    id: str | None
    inputs: Inputs
    outputs: list[Wanted]


def parse_request(
    body: bytes, headers: Mapping[str, str], manifest: BundleManifest, limits: Limits
) -> Inference:
    """An infer request's body → its images or pixels and the outputs it wants, every count and
    size checked against the limits before anything proportional to it is built."""
    body = decompress(body, headers.get("content-encoding", ""), limits.max_body_bytes)
    header, binary = split_body(body, headers.get(HEADER_LENGTH.lower()))
    # Numbers in JSON cost the parser (holding the GIL) and a Python object each: past four
    # images' worth of pixels, large tensors must travel as binary data. Counted before parsing.
    most = 4 * 3 * manifest.image_hw[0] * manifest.image_hw[1]
    if header.count(b",") > most:
        raise PayloadTooLarge(
            f"the JSON holds over {most:,} values; send large tensors with the binary data "
            "extension (binary_data_size; tritonclient's default)"
        )
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as e:
        problem = describe_validation(e.errors(), limit=1)
        raise InvalidParameter(f"inference request: {problem}") from None
    either = f"{IMAGE} (BYTES) or {PIXELS} ({pixels_tensor(manifest)[0]})"
    if len(request.inputs) != 1:
        raise InvalidParameter(f"send one input, {either}, not several")
    (tensor,) = request.inputs
    if tensor.name == IMAGE:
        inputs: Inputs = _images(tensor, binary, limits.max_images)
    elif tensor.name == PIXELS:
        inputs = _pixels(tensor, binary, manifest, limits.max_images)
    else:
        raise InvalidParameter(f"no input {tensor.name!r}; send {either}")
    return Inference(request.id, inputs, _outputs(request))


def _batch(
    tensor: RequestInput, binary: bytes, datatype: str, shapes: str, ok: bool, max_images: int
) -> int:
    """The batch size B, once the type, shape, count and where the data is are all right."""
    if tensor.datatype != datatype or not ok:
        raise InvalidParameter(
            f"input {tensor.name} is {tensor.datatype} {tensor.shape}; it takes {datatype} {shapes}"
        )
    n = tensor.shape[0]
    if n == 0:
        raise EmptyBody(f"input {tensor.name} holds no images")
    check_count(n, max_images)
    size = _param(tensor.parameters, "binary_data_size", int, -1)
    if (size >= 0) != (tensor.data is None) or max(size, 0) != len(binary):
        raise InvalidParameter(
            f"input {tensor.name}: give data, or binary_data_size equal to the {len(binary):,} "
            f"bytes after the JSON ({HEADER_LENGTH})"
        )
    return n


def _images(tensor: RequestInput, binary: bytes, max_images: int) -> list[bytes]:
    shape = tensor.shape
    ok = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
    n = _batch(tensor, binary, "BYTES", "[B] or [B, 1]", ok, max_images)
    if tensor.data is None:
        images = unpack_bytes(binary, n, tensor.name)
    else:
        items = _flatten(tensor.data)
        if len(items) != n or not all(isinstance(s, str) for s in items):
            raise InvalidParameter(f"input {tensor.name}: data must be {n} base64 strings")
        images = [base64_image(s, i, n) for i, s in enumerate(items)]
    for i, image in enumerate(images):
        if not image:
            raise EmptyBody(f"image {i} is empty" if n > 1 else "the image is empty")
    return images


def _pixels(
    tensor: RequestInput, binary: bytes, manifest: BundleManifest, max_images: int
) -> np.ndarray:
    datatype, row = pixels_tensor(manifest)
    ok = len(tensor.shape) == 4 and tensor.shape[1:] == row
    n = _batch(tensor, binary, datatype, f"[B, {', '.join(map(str, row))}]", ok, max_images)
    count, uint8 = n * math.prod(row), datatype == "UINT8"
    try:
        if tensor.data is None:
            x = np.frombuffer(binary, np.uint8 if uint8 else "<f4")
        else:
            x = np.asarray(tensor.data, np.float64 if uint8 else np.float32).ravel()
    except (ValueError, TypeError) as e:
        raise InvalidParameter(f"input {tensor.name}: data must be {count:,} numbers") from e
    if x.size != count:
        raise InvalidParameter(f"input {tensor.name}: {x.size:,} values for shape {tensor.shape}")
    if not np.isfinite(x).all():
        raise InvalidParameter(f"input {tensor.name} holds NaN or infinite values")
    if uint8 and x.dtype != np.uint8 and not ((x >= 0) & (x <= 255) & (x == np.round(x))).all():
        raise InvalidParameter(f"input {tensor.name}: UINT8 values are whole numbers 0..255")
    out = x.astype(np.uint8 if uint8 else np.float32)  # native byte order, writable
    return out.reshape(n, *row)


def _outputs(request: InferenceRequest) -> list[Wanted]:
    binary = _param(request.parameters, "binary_data_output", bool, False)
    if request.outputs is None:
        return [Wanted(name, binary, 0) for name in OUTPUT_NAMES]
    names = [o.name for o in request.outputs]
    if len(set(names)) != len(names):
        raise InvalidParameter(f"outputs are named more than once: {names}")
    wanted = []
    for o in request.outputs:
        if o.name not in OUTPUT_NAMES:
            raise InvalidParameter(f"no output {o.name!r}; this model answers {list(OUTPUT_NAMES)}")
        classes = _param(o.parameters, "classification", int, 0)
        if classes < 0 or (classes and o.name == EMBEDDING):
            raise InvalidParameter(f"output {o.name}: classification must be ≥ 1, on class scores")
        wanted.append(Wanted(o.name, _param(o.parameters, "binary_data", bool, binary), classes))
    return wanted


def _param(params: Parameters, key: str, kind: type[T], default: T) -> T:
    value = params.get(key, default)
    if type(value) is not kind:  # not isinstance: a bool is an int to Python, not to the protocol
        raise InvalidParameter(f"parameter {key} must be {kind.__name__}, got {value!r}")
    return value


def _flatten(data: list[Any]) -> list[Any]:
    """Nested row-major data (the protocol allows either form) → flat."""
    return [x for item in data for x in (_flatten(item) if isinstance(item, list) else [item])]


# -- responses --------------------------------------------------------------------------------


def encode_response(
    inference: Inference, m: BundleManifest, rows: dict[str, np.ndarray]
) -> Response:
    """The wanted outputs, as JSON data or appended binary, in the order they were asked for."""
    logits = rows[LOGITS]  # (B, K)
    values = {
        LOGITS: logits,
        PROBABILITIES: softmax(logits).astype(np.float32),
        EMBEDDING: rows[EMBEDDING],  # (B, D)
    }
    outputs, tails = [], []
    for w in inference.outputs:
        tensor, raw = _tensor(w, values[w.name], m.labels)
        if w.binary:
            tensor.parameters, tensor.data = {"binary_data_size": len(raw)}, None
            tails.append(raw)
        outputs.append(tensor)
    answer = InferenceResponse(
        model_name=m.name, model_version=m.version, id=inference.id, outputs=outputs
    )
    header = json.dumps(answer.model_dump(exclude_none=True), separators=(",", ":")).encode()
    if not tails:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(tails),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def _tensor(w: Wanted, value: np.ndarray, labels: list[str]) -> tuple[ResponseOutput, bytes]:
    """(the output with JSON data, the same data in binary form)."""
    if not w.classes:
        out = ResponseOutput(
            name=w.name, datatype="FP32", shape=list(value.shape), data=value.ravel().tolist()
        )
        return out, value.astype("<f4").tobytes()
    order = top_k(value, w.classes)  # (B, k), highest first
    k = order.shape[1]
    classes = [
        f"{row[i]:f}:{i}:{labels[i]}" for row, top in zip(value, order, strict=True) for i in top
    ]
    out = ResponseOutput(name=w.name, datatype="BYTES", shape=[len(value), k], data=classes)
    return out, pack_bytes([c.encode() for c in classes])
