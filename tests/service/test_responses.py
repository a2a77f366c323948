"""An error → its HTTP answer: one shape per route family, decided by the path alone."""

from __future__ import annotations

import json

import pytest

from service.edge.responses import error_body, error_response, raw_refusal, request_path, shape_for
from vit_core.errors import InternalError, InvalidParameter, Overloaded, ServiceError, all_errors


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/classify", "native"), ("/v2", "v2"), ("/v2/models/m/infer", "v2"), ("/v2x", "native"),
     ("/", "native"), ("/healthz", "native"), ("/v2/health/ready", "v2")],
)  # fmt: skip
def test_the_shape_is_the_routes(path: str, shape: str) -> None:
    assert shape_for(path) == shape


@pytest.mark.parametrize("cls", all_errors(), ids=lambda c: c.__name__)
def test_every_error_has_both_shapes_with_the_same_status_and_headers(
    cls: type[ServiceError],
) -> None:
    error = cls("detail")
    native, v2 = error_response(error, "/embed"), error_response(error, "/v2/models/m/infer")
    assert json.loads(native.body) == {"error": {"code": cls.code, "message": error.public_message}}
    assert json.loads(v2.body) == {"error": error.public_message}
    assert native.status_code == v2.status_code == error.status
    for name, value in error.headers().items():
        assert native.headers[name] == v2.headers[name] == value


def test_server_errors_never_show_their_cause_in_either_shape() -> None:
    error = InternalError("onnxruntime: CUDA out of memory at /opt/secret/path")
    for shape in ("native", "v2"):
        assert "secret" not in json.dumps(error_body(error, shape))


def test_a_raw_refusal_is_the_same_answer_as_http_bytes() -> None:
    raw = raw_refusal(Overloaded("too many open connections"), "/v2/models/m/infer")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 429 Too Many Requests"
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert headers[b"retry-after"] == b"1" and headers[b"connection"] == b"close"
    assert int(headers[b"content-length"]) == len(body)
    assert json.loads(body) == {"error": "too many open connections"}


@pytest.mark.parametrize(
    ("line", "path"),
    [(b"GET /v2/health/ready HTTP/1.1", "/v2/health/ready"),
     (b"POST /classify?top_k=2 HTTP/1.1", "/classify"),
     (b"GET http://example.org/v2/models/m HTTP/1.1", "/v2/models/m"),
     (b"garbage", ""), (b"", "")],
)  # fmt: skip
def test_the_path_of_a_request_line(line: bytes, path: str) -> None:
    assert request_path(line) == path


def test_no_error_body_grows_with_what_the_client_sent() -> None:
    huge = InvalidParameter("x" * 5_000_000)
    for path in ("/classify", "/v2/models/m/infer"):
        assert len(error_response(huge, path).body) < 2_200
