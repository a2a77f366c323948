"""An Open Inference Protocol body turned into a request (service/v2: parse_request, wire), on
hostile input (issue 22): what once answered 500, echoed the body or parsed for seconds is a
precise 4xx with a short message; a document is counted before pydantic builds it; a compressed
body's inflated bytes are taken from the real request-bytes budget, on the event loop, a step at
a time. The real manifest of the tiny bundle (32 px: four images' pixels are 12,288 values)."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import zlib
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import hostile
import numpy as np
import pytest

from service.edge.inputs import BodyBudget, Limits, base64_image
from service.v2.infer import MAX_JSON_KEYS, MAX_JSON_OBJECTS, Inference, parse_request
from service.v2.schemas import MAX_DIMS, MAX_NAME_CHARS, MAX_PARAMETERS, MAX_TENSORS
from service.v2.wire import INFLATE_STEP, decompress, split_body
from vit_core.bundle import BundleManifest, load_bundle
from vit_core.errors import (
    InvalidImage,
    InvalidParameter,
    MalformedRequest,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
)

LIMITS = Limits(max_body_bytes=32 << 20, max_images=4)
LENGTH = "inference-header-content-length"  # as Starlette's headers give it
JPEG_B64 = base64.b64encode(hostile.jpeg()).decode()
PIXELS = 32 * 32 * 3


@pytest.fixture(scope="module")
def manifest(tiny_bundle: Path) -> BundleManifest:
    return load_bundle(tiny_bundle)


def parse(m: BundleManifest, body: bytes | dict[str, Any], **headers: str) -> Inference:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return parse_request(raw, headers, m, LIMITS)


def refusal(m: BundleManifest, body: bytes | dict[str, Any], **headers: str) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        parse(m, body, **headers)
    return caught.value


def image(**changes: Any) -> dict[str, Any]:
    return {"name": "image", "datatype": "BYTES", "shape": [1], "data": [JPEG_B64], **changes}


def pixels(data: list[Any]) -> dict[str, Any]:
    tensor = {"name": "pixels", "datatype": "UINT8", "shape": [1, 32, 32, 3], "data": data}
    return {"inputs": [tensor]}


# -- 1: a 400 or 422, never a 500 ---------------------------------------------------------------


@pytest.mark.parametrize("given", ["²", "¹", "٣", "9" * 5000, "-1", "1e3", "0x10", "", "12 34"])
def test_a_header_length_that_is_not_ascii_digits_is_malformed_not_a_500(
    manifest: BundleManifest, given: str
) -> None:
    error = refusal(manifest, b"{}", **{LENGTH: given})
    assert isinstance(error, MalformedRequest) and error.status == 400
    assert "ASCII digits" in error.message and len(error.message) < 400


def test_a_header_length_splits_the_body_and_the_tail_is_not_copied() -> None:
    body = b'{"a":1}' + bytes(range(10))
    header, tail = split_body(body, " 7 ")
    assert header == b'{"a":1}' and isinstance(tail, memoryview) and tail.obj is body
    with pytest.raises(MalformedRequest, match="at most the body's 17"):
        split_body(body, "18")


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        (10**400, "data must be 3,072 numbers"),  # OverflowError in np.asarray
        (10**4000, "data must be 3,072 numbers"),
        ("7", "not strings"),
        (True, "not true or false"),
        (None, "not null"),
        ({}, "not objects"),
        (1e308, "whole numbers 0..255"),
        (-1, "whole numbers 0..255"),
    ],
)
def test_pixel_values_are_numbers_in_range_or_a_422(
    manifest: BundleManifest, value: object, phrase: str
) -> None:
    data = [0] * (PIXELS - 1) + [value]
    error = refusal(manifest, json.dumps(pixels(data)).encode())
    assert isinstance(error, InvalidParameter) and phrase in error.message, error.message


def test_pixels_nested_as_their_shape_equal_flat_ones_and_ragged_ones_are_refused(
    manifest: BundleManifest,
) -> None:
    x = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), np.uint8)
    nested = parse(manifest, pixels(x.tolist())).inputs
    flat = parse(manifest, pixels(x.ravel().tolist())).inputs
    assert isinstance(nested, np.ndarray) and isinstance(flat, np.ndarray)
    np.testing.assert_array_equal(nested, x)
    np.testing.assert_array_equal(flat, x)
    mixed = x.tolist()
    mixed[0][0] = 7
    assert "mixes lists and values" in refusal(manifest, pixels(mixed)).message
    deeper = [[[[[v] for v in px] for px in row] for row in img] for img in x.tolist()]
    assert (
        "nested deeper than its shape [1, 32, 32, 3]" in refusal(manifest, pixels(deeper)).message
    )


def test_image_data_must_be_strings(manifest: BundleManifest) -> None:
    for data in ([7], [True], [None], [[JPEG_B64, 1]]):
        error = refusal(manifest, {"inputs": [image(data=data)]})
        assert isinstance(error, InvalidParameter), data


# -- 3: counted before it is built ------------------------------------------------------------


def document(count: int, item: bytes, where: str, then: bytes = b"") -> bytes:
    """`count` items at `where` of a request, then `then` (invalid JSON: if pydantic saw the
    document first, the answer would be about that)."""
    items = b",".join(item % i if b"%d" in item else item for i in range(count))
    ok = json.dumps(image()).encode()
    if where == "inputs":
        return b'{"inputs":[' + items + b"]" + then + b"}"
    if where == "parameters":
        return b'{"inputs":[' + ok + b'],"parameters":{' + items + b"}" + then + b"}"
    return b'{"inputs":[' + ok + b'],"outputs":[' + items + b"]" + then + b"}"


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        (document(MAX_JSON_OBJECTS, b"{}", "inputs"), f"over {MAX_JSON_OBJECTS} objects"),
        (document(1000, b'"k%d":null', "parameters"), "keys"),
        (document(600, b'{"name":"logits"}', "outputs"), "objects"),
        (document(7000, b"[]", "inputs"), "over 6,210 lists"),
        (document(13_100, b"0", "inputs"), f"over {12_288 + MAX_JSON_KEYS + 4:,} values; send"),
    ],
    ids=["objects", "keys", "outputs", "lists", "values"],
)
def test_documents_are_counted_and_refused_before_pydantic_sees_them(
    manifest: BundleManifest, body: bytes, phrase: str
) -> None:
    error = refusal(manifest, body + b"]]] not json")  # counted first: no "Invalid JSON"
    assert isinstance(error, PayloadTooLarge) and phrase in error.message, error.message
    assert "an inference request has" in error.message or "binary data" in error.message


def test_the_counts_never_refuse_a_document_the_schema_bounds_allow(
    manifest: BundleManifest,
) -> None:
    """The largest request the schema's bounds allow in every part passes the counts and gets
    the schema's precise answer, not a 413."""
    params = {f"p{i}": "v" * MAX_NAME_CHARS for i in range(MAX_PARAMETERS)}
    tensor = image(parameters=params, shape=[1] * MAX_DIMS)
    request = {
        "id": "i" * MAX_NAME_CHARS,
        "parameters": params,
        "inputs": [tensor] * MAX_TENSORS,
        "outputs": [{"name": "logits", "parameters": params}] * MAX_TENSORS,
    }
    error = refusal(manifest, request)
    assert (type(error), error.message) == (InvalidParameter, _one_input(manifest))
    assert MAX_JSON_KEYS >= 4 + MAX_PARAMETERS + MAX_TENSORS * (5 + 2 + 2 * MAX_PARAMETERS)


def test_whitespace_is_bounded_and_indented_pixels_stay_within_the_bound(
    manifest: BundleManifest,
) -> None:
    """Padding costs pydantic ~2 ms a MB holding the GIL: refused past 24 bytes a value (here
    12,288 values and a MiB), while json.dumps(indent=2) of four images' pixels parses."""
    ok = json.dumps({"inputs": [image()]}).encode()
    error = refusal(manifest, ok[:-1] + b" " * 1_400_000 + b"}")
    assert isinstance(error, PayloadTooLarge)
    assert "over 1,343,488 bytes of whitespace; send it without indentation" in error.message
    nested = np.zeros((4, 32, 32, 3), np.uint8).tolist()
    tensor = {"name": "pixels", "datatype": "UINT8", "shape": [4, 32, 32, 3], "data": nested}
    indented = json.dumps({"inputs": [tensor]}, indent=2).encode()
    assert len(indented) > 250_000  # ~24 bytes of whitespace a value
    assert len(parse(manifest, indented).inputs) == 4


def test_base64_is_decoded_a_window_at_a_time_as_strictly_as_in_one_call() -> None:
    data = np.random.default_rng(0).integers(0, 256, 3 << 20, np.uint8).tobytes()
    wrapped = base64.encodebytes(data).decode()  # 76-character lines, as MIME encoders write
    assert base64_image(wrapped, 0, 1) == data
    window = 1 << 20  # a padded end at a window's end, with more after it, is refused
    with pytest.raises(InvalidImage, match="not valid base64"):
        base64_image("A" * (window - 2) + "==" + "AAAA", 0, 1)
    with pytest.raises(InvalidImage, match="not valid base64"):
        base64_image("AB==CD==", 0, 1)


def _one_input(m: BundleManifest) -> str:
    return "send one input, image (BYTES) or pixels (UINT8), not several"


@pytest.mark.parametrize(
    ("request_", "phrase"),
    [
        ({"inputs": [image()] * (MAX_TENSORS + 1)}, "inputs: List should have at most 16"),
        ({"inputs": [image()], "outputs": [{"name": "logits"}] * 17}, "at most 16 items"),
        ({"inputs": [image(shape=[1] * 9)]}, "shape: List should have at most 8 items"),
        ({"inputs": [image(shape=[2**40])]}, "less than or equal to 2147483647"),
        ({"inputs": [image(name="n" * 257)]}, "inputs.0.name: String should have at most 256"),
        ({"inputs": [image()], "id": "i" * 257}, "id: String should have at most 256"),
        ({"inputs": [image(parameters={f"k{i}": 1 for i in range(17)})]}, "at most 16 items"),
        ({"inputs": [image(parameters={"k" * 257: 1})]}, "at most 256 characters"),
    ],
)
def test_lists_strings_dims_and_parameters_have_bounds_in_the_schema(
    manifest: BundleManifest, request_: dict[str, Any], phrase: str
) -> None:
    error = refusal(manifest, request_)
    assert isinstance(error, InvalidParameter) and phrase in error.message, error.message


# -- 4: errors quote short excerpts -----------------------------------------------------------


def huge_everywhere(value: str) -> list[dict[str, Any]]:
    """A request with `value` in each place a client's text can go, one place at a time."""
    ok = image()
    return [
        {"inputs": [image(name=value)]},
        {"inputs": [image(datatype=value)]},
        {"inputs": [image(parameters={value: "x", "binary_data_size": "x"})]},
        {"inputs": [image(parameters={"binary_data_size": value})]},
        {"inputs": [ok], "outputs": [{"name": value}]},
        {"inputs": [ok], "outputs": [{"name": "logits"}, {"name": value}] * 2},
        {"inputs": [ok], "outputs": [{"name": "logits", "parameters": {"classification": value}}]},
        {"inputs": [ok], "parameters": {"binary_data_output": value}},
        {"inputs": [ok], "id": value, value: 1},
        {value: [ok]},
    ]


@pytest.mark.parametrize("size", [MAX_NAME_CHARS, 5 * 1024 * 1024])
def test_no_message_quotes_more_than_an_excerpt_of_what_the_client_sent(
    manifest: BundleManifest, size: int
) -> None:
    for request in huge_everywhere("é" * size):
        error = refusal(manifest, request)
        assert error.status in (400, 413, 422) and len(error.message) < 600, error.message[:300]
    error = refusal(manifest, b"{}", **{"content-encoding": "x" * 100_000})
    assert error.status == 415 and len(error.message) < 600


# -- 2: inflated bytes count against the body budget ------------------------------------------


def in_worker_thread(budget: BodyBudget, body: bytes, m: BundleManifest) -> list[int]:
    """parse_request as the service runs it: in a worker thread, with the request's `take`;
    the sizes taken (each recorded on the thread that took it)."""
    taken: list[int] = []
    loop_thread: list[int] = []

    async def run() -> None:
        loop_thread.append(threading.get_ident())
        with budget.held_by_request() as take:

            def counted(size: int) -> None:
                assert threading.get_ident() == loop_thread[0], "take ran off the event loop"
                take(size)
                taken.append(size)

            call = partial(parse_request, take=counted)
            try:
                await anyio.to_thread.run_sync(call, body, {"content-encoding": "gzip"}, m, LIMITS)
            finally:
                assert budget.held == sum(taken)

    anyio.run(run)
    assert budget.held == 0  # all given back when the request is done
    return taken


def test_inflated_bytes_are_taken_from_the_budget_a_step_at_a_time(
    manifest: BundleManifest,
) -> None:
    large = base64.b64encode(bytes(4 * INFLATE_STEP)).decode()  # parsed as bytes, not decoded
    inflated = json.dumps({"inputs": [image(data=[large])]}).encode()
    taken = in_worker_thread(BodyBudget(64 << 20), gzip.compress(inflated), manifest)
    assert sum(taken) == len(inflated) and max(taken) <= INFLATE_STEP


def test_a_body_that_inflates_past_the_budget_is_refused_before_it_is_all_made(
    manifest: BundleManifest,
) -> None:
    bomb = gzip.compress(b" " * (30 << 20), 9)  # 30 kB → 30 MB
    budget, capacity = BodyBudget(8 << 20), 8 << 20
    with pytest.raises(Overloaded):
        in_worker_thread(budget, bomb, manifest)
    assert budget.held == 0 and budget.capacity == capacity


def test_decompression_refuses_junk_truncation_and_bombs_and_keeps_the_limit() -> None:
    data = gzip.compress(b"x" * 100_000)
    assert decompress(data, " GZIP ", 100_000) == b"x" * 100_000
    assert decompress(zlib.compress(b"abc"), "deflate", 10) == b"abc"
    with pytest.raises(InvalidParameter, match="4 bytes after the end of its gzip data"):
        decompress(data + b"junk", "gzip", 10**6)
    with pytest.raises(InvalidParameter, match="truncated"):
        decompress(data[:-20], "gzip", 10**6)
    with pytest.raises(InvalidParameter, match="not valid deflate data"):
        decompress(b"not zlib", "deflate", 10**6)
    with pytest.raises(PayloadTooLarge, match="inflates past the limit of 99,999 bytes"):
        decompress(data, "gzip", 99_999)
