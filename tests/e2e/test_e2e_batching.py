"""Batching, proven through a real server: concurrent requests share ONNX Runtime calls (read from
/metrics), and each still gets exactly the answer it gets alone, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from live import Server


async def embed_all(url: str, requests: list[list[bytes]]) -> list[np.ndarray]:
    """Send every request at once (multipart); each answer's embeddings as (n, D)."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(images: list[bytes]) -> np.ndarray:
            files = [("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(images)]
            answer = await client.post("/embed", files=files)
            assert answer.status_code == 200, answer.text
            return np.array([r["embedding"] for r in answer.json()["results"]], np.float32)

        return list(await asyncio.gather(*(one(r) for r in requests)))


def test_concurrent_requests_share_batches_and_match_their_solo_answers(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(max_batch_size=8, max_wait_ms=200)
    images = [draw(seed=s) for s in range(8)]
    solo = [asyncio.run(embed_all(server.url, [[image]]))[0][0] for image in images]
    assert server.sample("vit_batch_size_count", graph="fast") == 8  # one call each when alone

    # Six single-image requests and one of three, all at once: nine images, seven requests.
    requests = [[images[i]] for i in range(6)] + [[images[6], images[7], images[0]]]
    answers = asyncio.run(embed_all(server.url, requests))

    calls = server.sample("vit_batch_size_count", graph="fast") - 8
    rows = server.sample("vit_batch_size_sum", graph="fast") - 8
    assert rows == 9 and calls < len(requests), f"{rows} images in {calls} calls: no sharing"
    for request, got in zip(requests, answers, strict=True):
        want = np.stack([solo[images.index(image)] for image in request])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_queue_and_inference_times_are_reported(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(max_wait_ms=5000)
    answer: Any = httpx.post(
        f"{server.url}/classify", content=draw(), headers={"Content-Type": "image/jpeg"}
    )
    assert answer.status_code == 200
    assert float(answer.headers["x-queue-time-ms"]) < 5000  # alone: no company to wait for
    assert float(answer.headers["x-total-time-ms"]) >= float(answer.headers["x-queue-time-ms"])
    assert server.sample("vit_queue_wait_seconds_count", graph="fast") == 1
    assert server.sample("vit_preprocess_duration_seconds_count") == 1
    assert server.sample("vit_inference_duration_seconds_count", graph="fast") == 1
    assert server.sample("vit_images_total", endpoint="/classify") == 1


def test_a_request_split_over_both_lanes_answers_as_its_images_do_alone(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(max_batch_size=2, engine_lanes=2)  # its four batches run two at a time
    assert httpx.get(f"{server.url}/model").json()["batching"]["lanes"] == 2
    images = [draw(seed=s) for s in range(8)]
    solo = [asyncio.run(embed_all(server.url, [[image]]))[0][0] for image in images]
    (together,) = asyncio.run(embed_all(server.url, [images]))
    np.testing.assert_allclose(together, np.stack(solo), rtol=1e-4, atol=1e-5)
    assert server.sample("vit_batch_size_count", graph="fast") == 8 + 4  # four batches of two
