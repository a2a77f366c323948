"""Overload (429), deadline (504) and a client that leaves: all through a real server, with tiny
limits and long batch waits so that the situations are certain, not timing-dependent."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from live import Server, wait_for


def classify(url: str, *images: bytes, timeout: float = 60) -> httpx.Response:
    files = [("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(images)]
    return httpx.post(f"{url}/classify", files=files, timeout=timeout)


def test_a_full_queue_answers_429_at_once_and_queued_work_still_finishes(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(max_batch_size=4, max_wait_ms=3000, max_queue_images=2, max_images_per_request=2)
    with ThreadPoolExecutor(1) as pool:
        queued = pool.submit(classify, server.url, draw(seed=1), draw(seed=2))
        wait_for(lambda: server.sample("vit_queue_depth", graph="fast") == 2, "a full queue")
        refused = classify(server.url, draw(seed=3))
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        assert queued.result().status_code == 200  # the batch ran when its wait was up
    assert server.sample("vit_rejections_total", reason="overloaded") == 1


def test_a_deadline_answers_504_and_the_work_never_runs(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(max_batch_size=4, max_wait_ms=10_000, request_timeout_s=0.5)
    answer = classify(server.url, draw())
    assert answer.status_code == 504 and answer.json()["error"]["code"] == "timeout"
    assert server.sample("vit_queue_depth", graph="fast") == 0  # dropped from the queue
    assert server.sample("vit_inflight_images") == 0
    assert server.sample("vit_batch_size_count", graph="fast") == 0  # and never computed
    assert server.sample("vit_rejections_total", reason="timeout") == 1


def test_work_for_a_client_that_left_is_dropped_before_it_runs(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(max_batch_size=4, max_wait_ms=10_000)
    with pytest.raises(httpx.ReadTimeout):
        classify(server.url, draw(), timeout=0.5)  # the client gives up and closes
    wait_for(
        lambda: server.sample("vit_rejections_total", reason="client_disconnected") == 1,
        "the server to notice the client left",
    )
    assert server.sample("vit_queue_depth", graph="fast") == 0
    assert server.sample("vit_inflight_images") == 0
    assert server.sample("vit_batch_size_count", graph="fast") == 0
    assert classify(server.url, *[draw(seed=s) for s in range(4)]).status_code == 200
