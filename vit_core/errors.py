"""Every error the service answers with, and the one table that gives each its HTTP status.

    ServiceError                      500 internal (base)
    ├── InvalidImage                  400 invalid_image
    ├── EmptyBody                     400 empty_body
    ├── MalformedRequest              400 malformed_request
    ├── Unauthorized                  401 unauthorized
    ├── NotFound                      404 not_found
    ├── MethodNotAllowed              405 method_not_allowed
    ├── BodyTimeout                   408 body_timeout (the connection is closed)
    ├── PayloadTooLarge               413 payload_too_large
    │   └── TooManyImages             413 payload_too_large
    ├── ImageTooLarge                 413 image_too_large
    ├── UnsupportedMediaType          415 unsupported_media_type
    ├── InvalidParameter              422 invalid_parameter
    ├── Overloaded                    429 overloaded (Retry-After)
    ├── ClientDisconnected            499 client_disconnected (nobody reads it; counted in metrics)
    ├── InternalError                 500 internal
    │   ├── BatchFailed               500 internal
    │   └── WorkerDied                500 internal
    ├── AttentionUnavailable          501 attention_unavailable
    ├── ClassificationUnavailable     501 classification_unavailable
    ├── NotReady                      503 not_ready (Retry-After)
    └── RequestTimeout                504 timeout

`code` is what clients branch on; `reason` labels vit_rejections_total and vit_failures_total and
may be finer than the code (too_many_images vs payload_too_large). 5xx errors never carry the
internal cause: `public_message` is fixed for them, the cause goes to the log.

The tree lives below both halves: the service answers with it (service/edge/responses.py turns an
error into an HTTP answer, in the shape its route speaks), and the offline tools (vit-train,
vit-export, vit-inspect) raise and report the same errors from the shared image transform, as a
message, without any web framework. `describe_validation` is the one wording of pydantic's
validation errors (request parameters, JSON bodies, model.json, settings), and `excerpt` the one
way a message quotes what a client sent: short, and cut, so an error never echoes a body.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

RETRY_AFTER_S = 1  # what 429 and 503 tell a client to wait; queues here drain in well under that
# What a message may quote of one thing a client sent: enough to recognise a name or a value,
# never a body (a 30 MB tensor name once came back inside a 31 MB error).
EXCERPT_CHARS = 200


class ServiceError(Exception):
    code: ClassVar[str] = "internal"
    reason: ClassVar[str] = ""  # "" means the same as code
    retry_after: ClassVar[int | None] = None

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code

    @property
    def status(self) -> int:
        return status_of(self)

    @property
    def label(self) -> str:
        return self.reason or self.code

    @property
    def public_message(self) -> str:
        return self.message

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class InvalidImage(ServiceError):
    code = "invalid_image"


class EmptyBody(ServiceError):
    code = "empty_body"


class MalformedRequest(ServiceError):
    """HTTP framing the service will not guess at (both Content-Length and Transfer-Encoding)."""

    code = "malformed_request"


class Unauthorized(ServiceError):
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class NotFound(ServiceError):
    code = "not_found"


class MethodNotAllowed(ServiceError):
    code = "method_not_allowed"

    def __init__(self, message: str = "", allow: str = "") -> None:
        super().__init__(message)
        self.allow = allow  # the methods the path does take, e.g. "GET, HEAD" (RFC 9110 wants it)

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow} if self.allow else {}


class BodyTimeout(ServiceError):
    """The body stopped moving, or came slower than the minimum rate: what is still on the wire
    is not read, so the connection cannot carry another request."""

    code = "body_timeout"

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"


class TooManyImages(PayloadTooLarge):
    reason = "too_many_images"


class ImageTooLarge(ServiceError):
    code = "image_too_large"


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"


class InvalidParameter(ServiceError):
    code = "invalid_parameter"


class Overloaded(ServiceError):
    code = "overloaded"
    retry_after = RETRY_AFTER_S


class ClientDisconnected(ServiceError):
    code = "client_disconnected"


class InternalError(ServiceError):
    code = "internal"

    @property
    def public_message(self) -> str:
        return "internal error; the request can be retried"


class BatchFailed(InternalError):
    reason = "batch_error"


class WorkerDied(InternalError):
    reason = "worker_died"


class AttentionUnavailable(ServiceError):
    code = "attention_unavailable"


class ClassificationUnavailable(ServiceError):
    """The model has no classification head (DINOv2, CLIP or SigLIP as released): it embeds."""

    code = "classification_unavailable"


class NotReady(ServiceError):
    code = "not_ready"
    retry_after = RETRY_AFTER_S


class RequestTimeout(ServiceError):
    code = "timeout"


# The one status table. Subclasses not listed inherit their parent's status.
STATUS: dict[type[ServiceError], int] = {
    ServiceError: 500,
    InvalidImage: 400,
    EmptyBody: 400,
    MalformedRequest: 400,
    Unauthorized: 401,
    NotFound: 404,
    MethodNotAllowed: 405,
    BodyTimeout: 408,
    PayloadTooLarge: 413,
    ImageTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidParameter: 422,
    Overloaded: 429,
    ClientDisconnected: 499,  # nginx's "client closed request"
    InternalError: 500,
    AttentionUnavailable: 501,
    ClassificationUnavailable: 501,
    NotReady: 503,
    RequestTimeout: 504,
}


def status_of(error: ServiceError) -> int:
    return next(STATUS[cls] for cls in type(error).__mro__ if cls in STATUS)


def all_errors() -> list[type[ServiceError]]:
    """ServiceError and every subclass, depth first: the tree in the docstring above."""
    found: list[type[ServiceError]] = []

    def walk(cls: type[ServiceError]) -> None:
        found.append(cls)
        for sub in cls.__subclasses__():
            walk(sub)

    walk(ServiceError)
    return found


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """`value` (something a client sent) as an error message may quote it: a string as it is,
    anything else as reprlib draws it (long lists and numbers abbreviated), and either cut to
    its first `limit` characters when longer, with an ellipsis (and a string's whole length).
    A string is cut before anything else is done with it: quoting a 30 MB name costs what
    quoting 200 characters does. Quote a name with !r after cutting: f"{excerpt(name)!r}"."""
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        return f"{value[:limit]}… ({len(value):,} characters)"
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int past Python's 4,300-digit limit for turning it into text
        return "a number too long to show"
    return text if len(text) <= limit else f"{text[:limit]}…"


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()  # Python 3.11's constructor takes no limits
    short.maxlevel, short.maxlist, short.maxtuple, short.maxdict = 3, 8, 8, 8
    short.maxstring, short.maxlong, short.maxother = EXCERPT_CHARS, 40, EXCERPT_CHARS
    return short


_REPR = _short_repr()
_REQUEST_PARTS = ("body", "query", "path", "header")  # FastAPI's location prefixes, not names


def validation_problems(errors: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """pydantic's errors as (where, message) pairs, e.g. ("images.3", "Input should be a valid
    string"); the offending input is left out (it can be huge, or a secret), and a location
    that is a client's key (an unknown field, a parameter's name) is quoted as an excerpt."""
    return [
        (".".join(_where(p) for p in e["loc"] if p not in _REQUEST_PARTS), str(e["msg"]))
        for e in errors
    ]


def _where(part: object) -> str:
    return excerpt(str(part))


def describe_validation(errors: Sequence[Mapping[str, Any]], limit: int = 3) -> str:
    """The first `limit` problems as "where: message; ..." (and how many more there were)."""
    problems = validation_problems(errors[:limit])
    shown = "; ".join(f"{where}: {msg}" if where else msg for where, msg in problems)
    more = len(errors) - limit
    return f"{shown} (and {more} more)" if more > 0 else shown
