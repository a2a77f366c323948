"""Bodies built to make the parser work per item are refused by counting, before any parsing:
a million JSON items, half a million multipart parts, nesting (in-process app, real sessions)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hosted import local_app
from test_api import wait_ready

from service.settings import Settings


@pytest.fixture(scope="module")
def client(tiny_bundle: Path) -> Iterator[TestClient]:
    with local_app(Settings(bundle=tiny_bundle, providers="cpu")) as app, TestClient(app) as c:
        wait_ready(c)
        yield c


def post(client: TestClient, body: bytes, kind: str) -> tuple[int, str]:
    answer = client.post("/classify", content=body, headers={"Content-Type": kind})
    return answer.status_code, answer.json()["error"]["message"]


def test_a_million_json_items_are_refused_without_an_error_per_item(client: TestClient) -> None:
    body = b'{"images": [' + b",".join([b"0"] * 1_000_000) + b"]}"
    status, message = post(client, body, "application/json")
    assert (status, message) == (413, "the JSON body holds more than 64 images, the limit")


def test_nested_json_is_refused_before_it_is_parsed(client: TestClient) -> None:
    status, message = post(client, b'{"images": [' + b"[" * 100_000 + b"]}", "application/json")
    assert status == 422 and "nested objects or arrays" in message


def test_half_a_million_empty_parts_are_counted_not_parsed(client: TestClient) -> None:
    part = b'--b0\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\n\r\n'
    body = part * 500_000 + b"--b0--\r\n"
    status, message = post(client, body, "multipart/form-data; boundary=b0")
    assert (status, message) == (
        413,
        "the multipart body has 500,000 parts; the limit is 64 images and 16 other fields",
    )
