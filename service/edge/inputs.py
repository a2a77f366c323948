"""A request body → the encoded images it carries, in order, or the precise reason it carries none.

Three forms, chosen by Content-Type:
    multipart/form-data   one or more file parts (curl -F file=@a.jpg -F file=@b.png)
    image/*               the body is one image (curl --data-binary @a.jpg -H 'Content-Type: ...')
    application/json      {"images": ["<base64>" | "data:image/...;base64,<base64>", ...]}
The body is read with a running byte count, so an oversized one is refused without being held,
and every byte held counts against the service's BodyBudget until the request is answered.
"""

from __future__ import annotations

import binascii
import re
import threading
from base64 import b64decode
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from vit_core.errors import (
    ClientDisconnected,
    EmptyBody,
    InvalidImage,
    InvalidParameter,
    Overloaded,
    PayloadTooLarge,
    TooManyImages,
    UnsupportedMediaType,
    describe_validation,
    excerpt,
)
from vit_core.memory import TrimWhenIdle, trim

MEDIA_TYPES = "multipart/form-data, image/* or application/json"
_DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[^;,]*)*)(;base64)?,", re.ASCII)
_WHITESPACE = b" \t\r\n\f\v"  # allowed inside base64 (line-wrapped encoders), deleted first
_B64_WINDOW = 1 << 20  # base64 characters decoded per call (a multiple of 4)
_BOUNDARY = re.compile(r"boundary=(\"[^\"]+\"|[^;\s]+)", re.IGNORECASE)
MAX_FORM_FIELDS = 16  # non-file parts a multipart body may carry besides its images


class ImagesJSON(BaseModel):
    """The JSON form of a request."""

    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(
        min_length=1,
        description="images, each base64 or a data: URI (data:image/png;base64,...)",
    )


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_images: int


def media_type(request: Request) -> str:
    """The request's Content-Type without parameters, if it is one of the three forms (else 415)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (media in ("multipart/form-data", "application/json") or media.startswith("image/")):
        raise UnsupportedMediaType(
            f"Content-Type {excerpt(media) or '(none)'} is not supported; send {MEDIA_TYPES}"
        )
    return media


async def read_images(
    request: Request, media: str, limits: Limits, take: Callable[[int], None]
) -> list[bytes]:
    """Every form is bounded before it is parsed: parts and items are counted at C speed first,
    so a body of half a million empty parts or a million JSON items is refused, not parsed."""
    body = await read_body(request, limits.max_body_bytes, take)
    if media == "multipart/form-data":
        images = await _multipart(request.headers, body, limits.max_images)
    elif media == "application/json":
        images = await run_in_threadpool(_json, body, limits.max_images)  # base64: off the loop
    else:
        images = [body]
    check_count(len(images), limits.max_images)
    return images


async def read_body(request: Request, limit: int, take: Callable[[int], None]) -> bytes:
    """The body, refused (413) as soon as it is known to be too large (400 if empty); each chunk
    is `take`n from the service's request-bytes budget first (429 when it holds too much).

    Answering before the body is read is safe: uvicorn drops the rest of a request whose
    answer has been sent and keeps the connection.
    """
    declared = request.headers.get("content-length", "")
    too_large = PayloadTooLarge(f"the body is larger than the limit of {limit:,} bytes")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            take(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect as e:
        raise ClientDisconnected("the client closed the connection while sending") from e
    if not size:
        raise EmptyBody("the request body is empty")
    return b"".join(chunks)


async def _multipart(headers: Headers, body: bytes, max_images: int) -> list[bytes]:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    _count_parts(headers, body, max_images)
    # One file past the limit still parses, so the answer says "N images; the limit is M".
    limit = max_images + MAX_FORM_FIELDS
    parser = MultiPartParser(headers, stream(), max_files=limit, max_fields=MAX_FORM_FIELDS)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise InvalidParameter(f"malformed multipart body: {e.message}") from e
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise EmptyBody("the multipart body has no file parts; send -F file=@image.jpg")
        check_count(len(files), max_images)
        return [await f.read() for f in files]
    finally:
        await form.close()


def _count_parts(headers: Headers, body: bytes, max_images: int) -> None:
    """Parts counted by their delimiters before the parser sees one: each costs it Python work."""
    boundary = _BOUNDARY.search(headers.get("content-type", ""))
    if boundary is None:
        raise InvalidParameter("malformed multipart body: the Content-Type has no boundary")
    parts = body.count(b"--" + boundary.group(1).strip('"').encode("latin-1")) - 1
    if parts > max_images + MAX_FORM_FIELDS:
        raise TooManyImages(
            f"the multipart body has {parts:,} parts; the limit is {max_images} images "
            f"and {MAX_FORM_FIELDS} other fields"
        )


def _json(body: bytes, max_images: int) -> list[bytes]:
    # {"images": [...]} has one object and one array, and at most a comma per item plus one per
    # data: URI: anything beyond is refused before a parser builds it (or an error per item).
    if body.count(b"{") + body.count(b"[") > 2:
        raise InvalidParameter('JSON body: nested objects or arrays; expected {"images": [...]}')
    if body.count(b",") > 2 * max_images + 2:
        raise TooManyImages(f"the JSON body holds more than {max_images} images, the limit")
    with parsing(len(body)):
        try:
            request = ImagesJSON.model_validate_json(body)
        except ValidationError as e:
            problem = describe_validation(e.errors(), limit=1)
            raise InvalidParameter(f'JSON body: {problem}; expected {{"images": [...]}}') from None
        check_count(len(request.images), max_images)
        return [base64_image(s, i, len(request.images)) for i, s in enumerate(request.images)]


def base64_image(text: str, index: int, count: int) -> bytes:
    name = f"image {index}" if count > 1 else "the image"
    payload = text
    if text.startswith("data:"):
        match = _DATA_URI.match(text)
        if not match or not match.group(3):
            raise InvalidImage(f"{name} is a data: URI but not a base64 one (data:<type>;base64,…)")
        payload = text[match.end() :]
    try:
        data = _b64decode(payload)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise InvalidImage(f"{name} is not valid base64") from e
    if not data:
        raise EmptyBody(f"{name} is empty")
    return data


def _b64decode(text: str) -> bytes:
    """Strict base64 (whitespace deleted first) → bytes, a window at a time: one call on a 30 MB
    image held the GIL, and so the event loop, for 70 ms; a 1 MiB window holds it ~2 ms."""
    compact = b"".join(
        text[at : at + _B64_WINDOW].encode("ascii").translate(None, _WHITESPACE)
        for at in range(0, len(text), _B64_WINDOW)
    )
    pieces = []
    for at in range(0, len(compact), _B64_WINDOW):
        window = compact[at : at + _B64_WINDOW]
        if window.endswith(b"=") and at + _B64_WINDOW < len(compact):
            raise binascii.Error("padding before the end")  # each window checks the rest
        pieces.append(b64decode(window, validate=True))
    return b"".join(pieces)


def check_count(count: int, max_images: int) -> None:
    """One request's images against max_images_per_request (every form, native and v2)."""
    if count > max_images:
        raise TooManyImages(f"{count} images in one request; the limit is {max_images}")


TRIM_AFTER_BODY = 8 << 20  # bytes a request took: then the heap is trimmed once it is done

# A parser holds the GIL for the whole of a document (pydantic: 56 ms for a 31 MB one, base64
# ~1 ms a MB), and the event loop's thread waits for every such hold in turn: 16 gzip bombs at
# once held /healthz 130 ms at the 99th percentile. So a front parses one large document at a
# time (its other threads wait on a lock, which releases the GIL); small ones never wait.
LARGE_DOCUMENT = 1 << 20  # bytes; parsed in well under a millisecond below this
_one_large_document = threading.Lock()


@contextmanager
def parsing(size: int) -> Iterator[None]:
    """Around a parse of `size` bytes in a worker thread: one large document at a time."""
    if size < LARGE_DOCUMENT:
        yield
        return
    with _one_large_document:
        yield


class BodyBudget:
    """Request bytes held at once: bodies being read and their images until decoded. Taken a
    chunk at a time on the event loop (one thread: no lock) and refused (429) past capacity."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.held = capacity, 0
        self._trim = TrimWhenIdle()  # a burst of medium bodies fragments the heap: see memory.py

    def take(self, size: int) -> None:
        if self.held + size > self.capacity:
            raise Overloaded(
                f"the service holds {self.held:,} bytes of requests, near its limit; retry shortly"
            )
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size

    @contextmanager
    def held_by_request(self) -> Iterator[Callable[[int], None]]:
        """A `take` for one request; everything it took is given back when the block ends."""
        taken = 0

        def take(size: int) -> None:
            nonlocal taken
            self.take(size)
            taken += size

        try:
            yield take
        finally:
            self.give(taken)
            if taken >= TRIM_AFTER_BODY:
                # Its buffers (a body, what it inflated to, the parser's objects) were below
                # glibc's mapping threshold: handed back now, not kept in the heap for good.
                trim()
            elif not self.held:
                self._trim.idle()
