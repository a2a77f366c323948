"""The Open Inference Protocol (KServe v2): its JSON shapes, a request body turned into what the
pipeline runs, and the rows that come back turned into the protocol's answer.

The wire shapes (JSON models, tensor names, metadata) are in schemas.py, the bytes in wire.py.
A request carries one input tensor:
    image    BYTES [B] or [B, 1]    one encoded image per element (JPEG, PNG, …), decoded and
                                    preprocessed as every upload is (JSON data: base64 strings)
    pixels   UINT8 [B, S, S, 3]     the graph's own input, straight to the batcher: decoded and
                                    resized as model.json says (the graph normalises); bundles
                                    of schema 1 take FP32 [B, 3, S, S], normalised too
and names any of the outputs logits [B, K], probabilities [B, K] and embedding [B, D] (all three
when it names none). Tensors travel as JSON `data` or, with the binary tensor data extension, as
raw bytes after the JSON (wire.py). An output's `classification: k` parameter answers BYTES
[B, k] of "value:index:label", highest first (Triton's classification extension).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypeVar

import numpy as np
from anyio import from_thread
from pydantic import ValidationError
from starlette.responses import Response

from service.edge.inputs import Limits, base64_image, check_count, parsing
from service.inference.outputs import softmax, top_k
from service.inference.pipeline import Inputs
from service.v2.schemas import (
    IMAGE,
    MAX_PARAMETERS,
    MAX_TENSORS,
    PIXELS,
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestInput,
    ResponseOutput,
    output_names,
    pixels_tensor,
)
from service.v2.wire import (
    HEADER_LENGTH,
    Take,
    decompress,
    pack_bytes,
    split_body,
    unpack_bytes,
)
from vit_core.bundle import EMBEDDING, LOGITS, BundleManifest
from vit_core.errors import (
    EmptyBody,
    InvalidParameter,
    PayloadTooLarge,
    describe_validation,
    excerpt,
)

T = TypeVar("T", int, bool)
# The most a JSON header can hold and still fit the schema's bounds (schemas.py): the request
# and its parameters, and each input or output and its parameters; each tensor's keys and its
# parameters' keys. A document with more is refused by counting (413), before it is parsed.
MAX_JSON_OBJECTS = 2 + 2 * 2 * MAX_TENSORS
MAX_JSON_KEYS = 4 + MAX_PARAMETERS + MAX_TENSORS * (5 + MAX_PARAMETERS + 2 + MAX_PARAMETERS)
_FEW = "an inference request has one input, a few outputs and a few parameters"
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b",[{: \t\r\n")))  # kept: counted
# Whitespace allowed per value the document may hold: json.dumps(indent=2) of four images'
# pixels as a nested [4, 224, 224, 3] list has 23.7 bytes of it a value (indent=4: 45.7).
WHITESPACE_PER_VALUE = 24
_WINDOW = 1 << 20

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
    body: bytes,
    headers: Mapping[str, str],
    manifest: BundleManifest,
    limits: Limits,
    take: Take | None = None,
) -> Inference:
    """An infer request's body → its images or pixels and the outputs it wants, every count and
    size checked against the limits before anything proportional to it is built.

    Runs in a worker thread (run_in_threadpool). `take` is the request's share of the
    request-bytes budget (the one read_body counted the body against): a compressed body's
    inflated bytes are taken from it a step at a time as they are made, each call made on the
    event loop, whose alone the budget is. Without it, inflated bytes are not counted.
    """
    count = _on_loop(take) if take is not None else None
    data = decompress(body, headers.get("content-encoding", ""), limits.max_body_bytes, count)
    header, binary = split_body(data, headers.get(HEADER_LENGTH.lower()))
    with parsing(len(data)):
        check_document(header, manifest, limits.max_images)
        request = _validated(header)
        either = f"{IMAGE} (BYTES) or {PIXELS} ({pixels_tensor(manifest)[0]})"
        if len(request.inputs) != 1:
            raise InvalidParameter(f"send one input, {either}, not several")
        (tensor,) = request.inputs
        if tensor.name == IMAGE:
            inputs: Inputs = _images(tensor, binary, limits.max_images)
        elif tensor.name == PIXELS:
            inputs = _pixels(tensor, binary, manifest, limits.max_images)
        else:
            raise InvalidParameter(f"no input {excerpt(tensor.name)!r}; send {either}")
        return Inference(request.id, inputs, _outputs(request, output_names(manifest)))


def _validated(header: bytes | bytearray) -> InferenceRequest:
    try:
        return InferenceRequest.model_validate_json(header)
    except ValidationError as e:
        problem = describe_validation(e.errors(include_input=False, include_url=False), limit=1)
        raise InvalidParameter(f"inference request: {problem}") from None


def _on_loop(take: Take) -> Take:
    """`take`, called from a worker thread, run on the event loop (and its refusal raised here)."""

    def hop(size: int) -> None:
        from_thread.run_sync(take, size)

    return hop


def check_document(header: bytes | bytearray, manifest: BundleManifest, max_images: int) -> None:
    """Refuse (413) a JSON header that would cost more to build than any valid request does.

    pydantic turns every value, string, key, list and object into a Python object while it
    parses (holding the GIL), and a dict is only checked for size once built: 600,000 null
    parameters took 15 s. So the document's parts are counted first, at C speed, by the bytes
    that make them: commas (values, strings among them), "[" (lists), "{" (objects) and ":"
    (keys). The same bytes inside strings count too, which can only overcount; base64 has none
    of them, and a data: URI one ":" and one ",".
    """
    most = 4 * 3 * manifest.image_hw[0] * manifest.image_hw[1]  # four images' worth of values
    binary = (
        "send large tensors with the binary data extension (binary_data_size; tritonclient's "
        "default)"
    )
    counted = (
        (b",", most + MAX_JSON_KEYS + max_images, "values", binary),  # and commas between keys
        (b"[", most // 2 + MAX_JSON_OBJECTS, "lists", binary),
        (b"{", MAX_JSON_OBJECTS, "objects", _FEW),
        (b":", MAX_JSON_KEYS + max_images, "keys", _FEW),
    )
    structure = _structure(header)
    counts = [structure.count(byte) for byte, *_ in counted]
    for count, (_, bound, what, advice) in zip(counts, counted, strict=True):
        if count > bound:
            raise PayloadTooLarge(f"the JSON holds over {bound:,} {what}; {advice}")
    # Whitespace between values costs pydantic ~2 ms a MB, all of it holding the GIL (31 MB of
    # padding: 56 ms; the same bytes in a base64 string: 5 ms).
    spaces = len(structure) - sum(counts)
    if spaces > WHITESPACE_PER_VALUE * most + _WINDOW:
        raise PayloadTooLarge(
            f"the JSON holds over {WHITESPACE_PER_VALUE * most + _WINDOW:,} bytes of whitespace; "
            f"send it without indentation, or large tensors with the binary data extension"
        )


def _structure(header: bytes | bytearray) -> bytes:
    """The header's structural bytes alone, found a window at a time: one pass over a 32 MB
    document instead of five, and the event loop gets the GIL between windows."""
    return b"".join(
        header[at : at + _WINDOW].translate(None, _NOT_STRUCTURE)
        for at in range(0, len(header), _WINDOW)
    )


def _batch(
    tensor: RequestInput, binary: memoryview, datatype: str, shapes: str, ok: bool, max_images: int
) -> int:
    """The batch size B, once the type, shape, count and where the data is are all right."""
    name = excerpt(tensor.name)
    if tensor.datatype != datatype or not ok:
        raise InvalidParameter(
            f"input {name} is {excerpt(tensor.datatype)} {excerpt(tensor.shape)}; "
            f"it takes {datatype} {shapes}"
        )
    n = tensor.shape[0]
    if n == 0:
        raise EmptyBody(f"input {name} holds no images")
    check_count(n, max_images)
    size = _param(tensor.parameters, "binary_data_size", int, -1)
    if (size >= 0) != (tensor.data is None) or max(size, 0) != len(binary):
        raise InvalidParameter(
            f"input {name}: give data, or binary_data_size equal to the {len(binary):,} "
            f"bytes after the JSON ({HEADER_LENGTH})"
        )
    return n


def _images(tensor: RequestInput, binary: memoryview, max_images: int) -> list[bytes]:
    shape = tensor.shape
    ok = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
    n = _batch(tensor, binary, "BYTES", "[B] or [B, 1]", ok, max_images)
    if tensor.data is None:
        images = unpack_bytes(binary, n, tensor.name)
    else:
        items = _flat(tensor.data, tensor.shape, tensor.name)
        if len(items) != n or set(map(type, items)) != {str}:
            raise InvalidParameter(f"input {excerpt(tensor.name)}: data must be {n} base64 strings")
        images = [base64_image(s, i, n) for i, s in enumerate(items)]
    for i, image in enumerate(images):
        if not image:
            raise EmptyBody(f"image {i} is empty" if n > 1 else "the image is empty")
    return images


def _pixels(
    tensor: RequestInput, binary: memoryview, manifest: BundleManifest, max_images: int
) -> np.ndarray:
    datatype, row = pixels_tensor(manifest)
    ok = len(tensor.shape) == 4 and tensor.shape[1:] == row
    n = _batch(tensor, binary, datatype, f"[B, {', '.join(map(str, row))}]", ok, max_images)
    count, uint8, name = n * math.prod(row), datatype == "UINT8", excerpt(tensor.name)
    numbers = f"input {name}: data must be {count:,} numbers"
    if uint8:
        numbers += " (UINT8: whole numbers 0..255)"
    try:
        if tensor.data is None:
            x = np.frombuffer(binary, np.uint8 if uint8 else "<f4")
        else:
            values = _flat(tensor.data, tensor.shape, tensor.name)
            other = set(map(type, values)) - {int, float}  # bool is not int here: no true, "7"
            if other:
                raise InvalidParameter(f"{numbers}, not {_json_kinds(other)}")
            with np.errstate(over="ignore"):  # past float32: inf, refused just below
                x = np.asarray(values, np.float64 if uint8 else np.float32)
    except (ValueError, TypeError, OverflowError) as e:  # OverflowError: an int of 310+ digits
        raise InvalidParameter(numbers) from e
    if x.size != count:
        raise InvalidParameter(f"input {name}: {x.size:,} values for shape {excerpt(tensor.shape)}")
    if not np.isfinite(x).all():
        raise InvalidParameter(f"input {name} holds NaN or infinite values")
    if uint8 and x.dtype != np.uint8 and not ((x >= 0) & (x <= 255) & (x == np.round(x))).all():
        raise InvalidParameter(f"input {name}: UINT8 values are whole numbers 0..255")
    out = x.astype(np.uint8 if uint8 else np.float32)  # native byte order, writable
    return out.reshape(n, *row)


def _flat(data: list[Any], shape: list[int], name: str) -> list[Any]:
    """Row-major data, flat or nested (the protocol allows either), → flat: a level at a time,
    at C speed (a Python step per element would cost 0.2 s on four images' pixels); a level
    that mixes lists and values is refused, and so is nesting deeper than the shape."""
    level = data  # its items are along the first axis
    for _ in range(len(shape) - 1):
        kinds = set(map(type, level))
        if list not in kinds:
            return level
        if kinds != {list}:
            raise InvalidParameter(f"input {excerpt(name)}: data mixes lists and values")
        level = list(chain.from_iterable(level))
    if list in set(map(type, level)):
        raise InvalidParameter(
            f"input {excerpt(name)}: data is nested deeper than its shape {excerpt(shape)}"
        )
    return level


def _json_kinds(kinds: set[type]) -> str:
    names = {str: "strings", bool: "true or false", type(None): "null", dict: "objects"}
    return " or ".join(sorted(names.get(k, k.__name__) for k in kinds))


def _outputs(request: InferenceRequest, answers: tuple[str, ...]) -> list[Wanted]:
    """The outputs asked for, or all that the model `answers` when none is named."""
    binary = _param(request.parameters, "binary_data_output", bool, False)
    if request.outputs is None:
        return [Wanted(name, binary, 0) for name in answers]
    names = [o.name for o in request.outputs]
    if len(set(names)) != len(names):
        raise InvalidParameter(f"outputs are named more than once: {excerpt(names)}")
    wanted = []
    for o in request.outputs:
        if o.name not in answers:
            raise InvalidParameter(
                f"no output {excerpt(o.name)!r}; this model answers {list(answers)}"
            )
        classes = _param(o.parameters, "classification", int, 0)
        if classes < 0 or (classes and o.name == EMBEDDING):
            raise InvalidParameter(f"output {o.name}: classification must be ≥ 1, on class scores")
        wanted.append(Wanted(o.name, _param(o.parameters, "binary_data", bool, binary), classes))
    return wanted


def _param(params: Parameters, key: str, kind: type[T], default: T) -> T:
    value = params.get(key, default)
    if type(value) is not kind:  # not isinstance: a bool is an int to Python, not to the protocol
        raise InvalidParameter(
            f"parameter {key} must be {kind.__name__}, got {excerpt(repr(value))}"
        )
    return value


# -- responses --------------------------------------------------------------------------------


def encode_response(
    inference: Inference, m: BundleManifest, rows: dict[str, np.ndarray]
) -> Response:
    """The wanted outputs, as JSON data or appended binary, in the order they were asked for."""

    def value(name: str) -> np.ndarray:
        if name == EMBEDDING:
            return rows[EMBEDDING]  # (B, E)
        logits = rows[LOGITS]  # (B, K): asked for only from a model with a head
        return logits if name == LOGITS else softmax(logits).astype(np.float32)

    outputs, tails = [], []
    for w in inference.outputs:
        tensor, raw = _tensor(w, value(w.name), m.labels)
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
