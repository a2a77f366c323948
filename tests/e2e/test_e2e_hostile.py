"""Hostile input through a real server: each gets a precise 4xx and the service keeps serving."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
from hostile import png
from live import Server

LIMIT = 100_000  # max_body_bytes for this server
IMAGE = {"Content-Type": "image/jpeg"}
BOMB = png(60_000, 60_000)  # a few hundred bytes declaring 3.6 gigapixels


def chunks(total: int) -> Iterator[bytes]:
    """A body with no Content-Length (chunked), so the size is only known by counting."""
    for _ in range(total // 10_000):
        yield b"\xff" * 10_000


def hostile(jpeg: bytes) -> list[tuple[str, dict[str, Any], int, str]]:
    """(what, httpx request arguments, status, error code)."""
    noise = np.random.default_rng(0).bytes(20_000)
    return [
        ("truncated jpeg", dict(content=jpeg[: len(jpeg) // 2], headers=IMAGE), 400,
         "invalid_image"),
        ("random bytes", dict(content=noise, headers=IMAGE), 400, "invalid_image"),
        ("decompression bomb", dict(content=BOMB, headers={"Content-Type": "image/png"}),
         413, "image_too_large"),
        ("oversized body", dict(content=b"\xff" * (3 * LIMIT), headers=IMAGE), 413,
         "payload_too_large"),
        ("oversized chunked body", dict(content=chunks(3 * LIMIT), headers=IMAGE), 413,
         "payload_too_large"),
        ("too many images", dict(files=[("file", ("a.jpg", b"x", "image/jpeg"))] * 9), 413,
         "payload_too_large"),
        ("bad base64", dict(json={"images": ["%%%"]}), 400, "invalid_image"),
        ("wrong content type", dict(content=jpeg, headers={"Content-Type": "text/csv"}), 415,
         "unsupported_media_type"),
        ("zero-length body", dict(content=b"", headers=IMAGE), 400, "empty_body"),
    ]  # fmt: skip


def test_hostile_input_gets_a_precise_4xx_and_the_service_keeps_serving(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(max_body_bytes=LIMIT, max_images_per_request=8)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for name, request, status, code in hostile(draw(width=256, height=256)):
            answer = client.post("/classify", **request)
            assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), name
            assert client.get("/healthz").status_code == 200, f"unhealthy after {name}"
        good = client.post("/classify", content=draw(), headers=IMAGE)
        assert good.status_code == 200
    assert server.process.poll() is None
    assert "Traceback" not in server.output()
