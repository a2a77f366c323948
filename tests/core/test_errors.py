"""The error tree and its one status table."""

from __future__ import annotations

import pytest

from vit_core.errors import (
    STATUS,
    BatchFailed,
    InternalError,
    Overloaded,
    ServiceError,
    TooManyImages,
    Unauthorized,
    all_errors,
    status_of,
)

EXPECTED = {  # the public contract: code → status
    "invalid_image": 400,
    "empty_body": 400,
    "malformed_request": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "image_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_parameter": 422,
    "overloaded": 429,
    "client_disconnected": 499,
    "internal": 500,
    "attention_unavailable": 501,
    "not_ready": 503,
    "timeout": 504,
}


@pytest.mark.parametrize("cls", all_errors(), ids=lambda c: c.__name__)
def test_every_error_class_maps_to_its_status(cls: type[ServiceError]) -> None:
    error = cls("detail")
    assert error.status == EXPECTED[cls.code] == status_of(error)
    if error.status in (429, 503):
        assert int(error.headers()["Retry-After"]) >= 1


def test_the_tree_covers_every_code_and_the_table_only_known_classes() -> None:
    assert {cls.code for cls in all_errors()} == set(EXPECTED)
    assert set(STATUS) <= set(all_errors())


def test_server_errors_never_show_their_cause() -> None:
    for cls in (InternalError, BatchFailed):
        error = cls("onnxruntime: CUDA out of memory at /opt/secret/path")
        assert "secret" not in error.public_message and error.status == 500


def test_subclasses_inherit_status_and_keep_a_finer_metrics_reason() -> None:
    error = TooManyImages("70 images")
    assert (error.status, error.code, error.label) == (413, "payload_too_large", "too_many_images")
    assert Overloaded().label == "overloaded"
    assert Unauthorized().headers() == {"WWW-Authenticate": "Bearer"}
