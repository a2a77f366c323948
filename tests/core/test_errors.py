"""The error tree and its one status table."""

from __future__ import annotations

import pytest

from vit_core.errors import (
    EXCERPT_CHARS,
    STATUS,
    BatchFailed,
    InternalError,
    Overloaded,
    ServiceError,
    TooManyImages,
    Unauthorized,
    all_errors,
    describe_validation,
    excerpt,
    status_of,
    validation_problems,
)

EXPECTED = {  # the public contract: code → status
    "invalid_image": 400,
    "empty_body": 400,
    "malformed_request": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "body_timeout": 408,
    "payload_too_large": 413,
    "image_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_parameter": 422,
    "overloaded": 429,
    "client_disconnected": 499,
    "internal": 500,
    "attention_unavailable": 501,
    "classification_unavailable": 501,
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


def test_an_excerpt_quotes_a_short_value_whole_and_cuts_a_long_one() -> None:
    assert excerpt("logits") == "logits" and f"{excerpt('x')!r}" == "'x'"
    cut = excerpt("x" * 30_000_000)
    assert cut == "x" * EXCERPT_CHARS + "… (30,000,000 characters)"
    assert excerpt("abcdef", limit=3) == "abc… (6 characters)"
    assert excerpt([1, 2]) == "[1, 2]"
    assert len(excerpt([7] * 100_000)) < 40  # reprlib stops after a few items
    assert len(excerpt(10**4000)) < 100 and excerpt(None) == "None"
    assert len(excerpt({"k": "v" * 10_000})) <= EXCERPT_CHARS + 1


def test_validation_errors_quote_a_clients_long_key_as_an_excerpt() -> None:
    errors = [{"loc": ("body", "parameters", "k" * 1_000_000), "msg": "Extra inputs"}]
    ((where, msg),) = validation_problems(errors)
    assert where.startswith("parameters." + "k" * 10) and where.endswith("(1,000,000 characters)")
    assert len(describe_validation(errors)) < 300 and msg == "Extra inputs"
