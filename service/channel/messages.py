"""What the fronts and the engine say to each other, byte for byte, and how frames are cut.

    frame   = kind u8 ‖ request id u64 ‖ body length u32 ‖ body         (little-endian)

    SUBMIT  front → engine   graph u8 ‖ form u8 ‖ keep u8 ‖ timeout f32 ‖ count u32 ‖ then
                             encoded: count × length u32, then the images' bytes back to back;
                             pixels: count rows as the graph takes them (the manifest's shape)
    CANCEL  front → engine   (empty): the client left or the deadline passed; drop its images
    INFO    front → engine   (empty); the answer is INFO with a JSON body (how the engine runs)
    RESULT  engine → front   queue_s f64 ‖ inference_s f64 ‖ outputs u8 ‖ per output: name
                             (u8 length ‖ utf-8) ‖ dtype u8 ‖ ndim u8 ‖ dims u32… ‖ data; then
                             pictures u32 ‖ per picture: box 4 × f32 ‖ w u32 ‖ h u32 ‖ RGB bytes
    ERROR   engine → front   code (u8 length ‖ ascii) ‖ message (utf-8): one of vit_core's errors

Why not pickle: a frame is read by the other side's event loop, and a struct header over raw
buffers costs microseconds where pickle's generality costs more and runs code on load.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from PIL import Image

from vit_core.bundle import EXPLAIN, FAST
from vit_core.errors import InternalError, ServiceError, all_errors
from vit_core.geometry import Box

HEADER = struct.Struct("<BQI")  # kind, request id, body length
_SUBMIT = struct.Struct("<BBBfI")  # graph, form, keep pictures, timeout s, count
_RESULT = struct.Struct("<ddB")  # queue s, inference s, outputs
_TENSOR = struct.Struct("<BB")  # dtype, ndim
_PICTURE = struct.Struct("<4fII")  # box, width, height
_U32 = struct.Struct("<I")
GRAPHS = (FAST, EXPLAIN)
_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.uint8))
_ERRORS = {cls.__name__: cls for cls in all_errors()}


class Kind(IntEnum):
    SUBMIT = 1
    CANCEL = 2
    INFO = 3
    RESULT = 4
    ERROR = 5


@dataclass(frozen=True)
class Picture:
    """The decoded image, at most OVERVIEW_SIDE a side, and the part of it the model saw: what a
    heat-map is drawn over (asked for with keep_images)."""

    image: Image.Image
    box: Box


@dataclass(frozen=True)
class Outcome:
    """A request's answer from the engine: its rows and where their time went."""

    outputs: dict[str, np.ndarray]  # each (n, ...): the request's rows, in its image order
    queue_s: float  # the longest any of its images waited for a batch
    inference_s: float  # ONNX Runtime time of the batches it rode in
    pictures: list[Picture]  # per image, only when asked for


@dataclass(frozen=True)
class Submit:
    graph: str
    images: list[bytes] | np.ndarray  # encoded images, or rows of pixels (n, *row)
    keep_images: bool
    timeout_s: float


def frame(kind: Kind, request: int, body: bytes | bytearray | memoryview = b"") -> bytes:
    return HEADER.pack(kind, request, len(body)) + bytes(body)


def encode_submit(request: int, job: Submit) -> list[bytes | memoryview]:
    """The SUBMIT frame as buffers to write in order (no copy of the images into one)."""
    graph = GRAPHS.index(job.graph)
    if isinstance(job.images, np.ndarray):
        data = np.ascontiguousarray(job.images).tobytes()  # one copy, as a frame's payload
        head = _SUBMIT.pack(graph, 1, job.keep_images, job.timeout_s, len(job.images))
        return [HEADER.pack(Kind.SUBMIT, request, len(head) + len(data)), head, data]
    lengths = b"".join(_U32.pack(len(image)) for image in job.images)
    head = _SUBMIT.pack(graph, 0, job.keep_images, job.timeout_s, len(job.images)) + lengths
    size = len(head) + sum(len(image) for image in job.images)
    return [HEADER.pack(Kind.SUBMIT, request, size), head, *job.images]


def decode_submit(body: memoryview, row: tuple[tuple[int, ...], np.dtype[Any]]) -> Submit:
    """`row`: one image's shape and dtype as the graphs take them, for a pixels SUBMIT."""
    graph, form, keep, timeout, count = _SUBMIT.unpack_from(body)
    offset = _SUBMIT.size
    if form == 1:
        shape, dtype = row
        pixels = np.frombuffer(bytes(body[offset:]), dtype).reshape(count, *shape)
        return Submit(GRAPHS[graph], pixels, bool(keep), timeout)
    lengths = struct.unpack_from(f"<{count}I", body, offset)
    offset += 4 * count
    images = []
    for length in lengths:
        images.append(bytes(body[offset : offset + length]))
        offset += length
    return Submit(GRAPHS[graph], images, bool(keep), timeout)


def encode_result(request: int, outcome: Outcome) -> bytes:
    parts = [_RESULT.pack(outcome.queue_s, outcome.inference_s, len(outcome.outputs))]
    for name, value in outcome.outputs.items():
        encoded = name.encode()
        head = _TENSOR.pack(_DTYPES.index(value.dtype), value.ndim)
        dims = struct.pack(f"<{value.ndim}I", *value.shape)
        parts += [bytes([len(encoded)]), encoded, head, dims, np.ascontiguousarray(value).tobytes()]
    parts.append(_U32.pack(len(outcome.pictures)))
    for picture in outcome.pictures:
        rgb = picture.image.convert("RGB")
        parts += [_PICTURE.pack(*picture.box, *rgb.size), rgb.tobytes()]
    return frame(Kind.RESULT, request, b"".join(parts))


def decode_result(body: memoryview) -> Outcome:
    queue_s, inference_s, count = _RESULT.unpack_from(body)
    offset = _RESULT.size
    outputs = {}
    for _ in range(count):
        length = body[offset]
        name = bytes(body[offset + 1 : offset + 1 + length]).decode()
        offset += 1 + length
        dtype_code, ndim = _TENSOR.unpack_from(body, offset)
        shape = struct.unpack_from(f"<{ndim}I", body, offset + _TENSOR.size)
        offset += _TENSOR.size + 4 * ndim
        dtype = _DTYPES[dtype_code]
        size = dtype.itemsize * int(np.prod(shape))
        outputs[name] = np.frombuffer(bytes(body[offset : offset + size]), dtype).reshape(shape)
        offset += size
    (pictures,) = _U32.unpack_from(body, offset)
    offset += _U32.size
    found = []
    for _ in range(pictures):
        *box, w, h = _PICTURE.unpack_from(body, offset)
        offset += _PICTURE.size
        image = Image.frombytes("RGB", (w, h), bytes(body[offset : offset + 3 * w * h]))
        offset += 3 * w * h
        found.append(Picture(image, (box[0], box[1], box[2], box[3])))
    return Outcome(outputs, queue_s, inference_s, found)


def encode_error(request: int, error: ServiceError) -> bytes:
    code = type(error).__name__.encode("ascii")
    return frame(Kind.ERROR, request, bytes([len(code)]) + code + error.message.encode())


def decode_error(body: memoryview) -> ServiceError:
    """The engine's error as the same class and message on this side (5xx: no cause shown)."""
    length = body[0]
    cls = _ERRORS.get(bytes(body[1 : 1 + length]).decode("ascii"), InternalError)
    return cls(bytes(body[1 + length :]).decode(errors="replace"))


def encode_info(request: int, info: dict[str, Any]) -> bytes:
    return frame(Kind.INFO, request, json.dumps(info).encode())


def decode_info(body: memoryview) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(bytes(body))
    return info


class Frames:
    """Cuts a byte stream into frames: feed it what arrives, it calls `on_frame(kind, request,
    body)` for each whole one. The body is a view of the stream's buffer, valid during the call
    only: the decoders copy what they keep."""

    def __init__(self, on_frame: Callable[[Kind, int, memoryview], None]) -> None:
        self._on_frame = on_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        with memoryview(buffer) as view:
            while len(buffer) - start >= HEADER.size:
                kind, request, size = HEADER.unpack_from(buffer, start)
                end = start + HEADER.size + size
                if len(buffer) < end:
                    break
                with view[start + HEADER.size : end] as body:  # a BufferError if one is kept
                    self._on_frame(Kind(kind), request, body)
                start = end
        if start:
            del buffer[:start]
