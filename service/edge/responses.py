"""An error → its HTTP answer: the one place that decides the body's shape, for every answerer
(the app's exception handler, the request guard, the connection cap, the probes).

    native API   {"error": {"code": "<code>", "message": "<message>"}}
    /v2/...      {"error": "<message>"}          (the Open Inference Protocol's shape)

Same status and headers either way (vit_core.errors' table). The shape is a function of the path
alone, so a refusal made before routing (too many requests, too many connections) speaks the
protocol of the route it refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import urlsplit

from starlette.responses import JSONResponse

from vit_core.errors import (
    InternalError,
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    ServiceError,
    excerpt,
)

Shape = Literal["native", "v2"]
V2_PREFIX = "/v2"
# Messages quote at most an excerpt of what a client sent (vit_core.errors.excerpt); this cut of
# the whole message is the last guard: no error answer grows with the request.
MESSAGE_CHARS = 2000


def shape_for(path: str) -> Shape:
    """v2's shape under /v2 (the protocol's own routes), the native one everywhere else."""
    return "v2" if path == V2_PREFIX or path.startswith(V2_PREFIX + "/") else "native"


def error_body(error: ServiceError, shape: Shape) -> dict[str, Any]:
    message = excerpt(error.public_message, MESSAGE_CHARS)  # however it was worded
    if shape == "v2":
        return {"error": message}
    return {"error": {"code": error.code, "message": message}}


def error_response(error: ServiceError, path: str) -> JSONResponse:
    """The answer to `error` on a request for `path`: its status, body and headers."""
    body = error_body(error, shape_for(path))
    return JSONResponse(body, status_code=error.status, headers=error.headers())


def raw_refusal(error: ServiceError, path: str) -> bytes:
    """The same answer as raw HTTP/1.1 bytes, closing the connection: for refusals written
    before there is an ASGI request to answer (a connection over the cap)."""
    response = error_response(error, path)
    reason = HTTPStatus(error.status).phrase if error.status in _KNOWN else "Error"
    head = [f"HTTP/1.1 {error.status} {reason}".encode()]
    head += [name + b": " + value for name, value in response.raw_headers]
    head.append(b"connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + bytes(response.body)


def request_path(request_line: bytes) -> str:
    """The path of an HTTP/1.1 request line (origin or absolute form); "" if it has none."""
    parts = request_line.split(b" ")
    if len(parts) != 3:
        return ""
    target = parts[1].decode("latin-1")
    return urlsplit(target).path if not target.startswith("/") else target.split("?")[0]


def from_http_exception(
    status: int, detail: str, method: str, path: str, headers: Mapping[str, str] | None
) -> ServiceError:
    """What Starlette's router raises, as one of ours: 404 and 405 are refusals like any other."""
    if status == 404:
        return NotFound(f"no route {excerpt(path)}")
    if status == 405:
        allow = (headers or {}).get("Allow", "")
        where, verb = excerpt(path), excerpt(method)
        return MethodNotAllowed(f"{verb} is not allowed on {where}; use {allow}", allow=allow)
    return InvalidParameter(detail) if 400 <= status < 500 else InternalError(detail)


_KNOWN = frozenset(s.value for s in HTTPStatus)  # 499 (client closed) is nginx's, not IANA's
