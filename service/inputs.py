"""A request body → the encoded images it carries, in order, or the precise reason it carries none.

Three forms, chosen by Content-Type:
    multipart/form-data   one or more file parts (curl -F file=@a.jpg -F file=@b.png)
    image/*               the body is one image (curl --data-binary @a.jpg -H 'Content-Type: ...')
    application/json      {"images": ["<base64>" | "data:image/...;base64,<base64>", ...]}
The body is read with a running byte count, so an oversized one is refused without being held.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from service.errors import (
    ClientDisconnected,
    EmptyBody,
    InvalidImage,
    InvalidParameter,
    PayloadTooLarge,
    TooManyImages,
    UnsupportedMediaType,
    describe_validation,
)

MEDIA_TYPES = "multipart/form-data, image/* or application/json"
_DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[^;,]*)*)(;base64)?,", re.ASCII)
_WHITESPACE = re.compile(rb"\s+")


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
            f"Content-Type {media or '(none)'} is not supported; send {MEDIA_TYPES}"
        )
    return media


async def read_images(request: Request, media: str, limits: Limits) -> list[bytes]:
    body = await read_body(request, limits.max_body_bytes)
    if not body:
        raise EmptyBody("the request body is empty")
    if media == "multipart/form-data":
        images = await _multipart(request.headers, body, limits.max_images)
    elif media == "application/json":
        images = _json(body, limits.max_images)
    else:
        images = [body]
    _check_count(len(images), limits.max_images)
    return images


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to be too large.

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
            chunks.append(chunk)
    except ClientDisconnect as e:
        raise ClientDisconnected("the client closed the connection while sending") from e
    return b"".join(chunks)


async def _multipart(headers: Headers, body: bytes, max_images: int) -> list[bytes]:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    # Files past max_images are refused below; the body size already bounds the part count.
    parser = MultiPartParser(headers, stream(), max_files=float("inf"), max_fields=1000)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise InvalidParameter(f"malformed multipart body: {e.message}") from e
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise EmptyBody("the multipart body has no file parts; send -F file=@image.jpg")
        _check_count(len(files), max_images)
        return [await f.read() for f in files]
    finally:
        await form.close()


def _json(body: bytes, max_images: int) -> list[bytes]:
    try:
        request = ImagesJSON.model_validate_json(body)
    except ValidationError as e:
        problem = describe_validation(e.errors(), limit=1)
        raise InvalidParameter(f'JSON body: {problem}; expected {{"images": [...]}}') from None
    _check_count(len(request.images), max_images)
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
        data = b64decode(_WHITESPACE.sub(b"", payload.encode("ascii")), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise InvalidImage(f"{name} is not valid base64") from e
    if not data:
        raise EmptyBody(f"{name} is empty")
    return data


def _check_count(count: int, max_images: int) -> None:
    if count > max_images:
        raise TooManyImages(f"{count} images in one request; the limit is {max_images}")
