"""SIGTERM with work in flight: the server stops accepting, finishes what it holds, then exits."""

from __future__ import annotations

import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from live import Server, wait_for


def classify(url: str, image: bytes) -> httpx.Response:
    headers = {"Content-Type": "image/jpeg"}
    return httpx.post(f"{url}/classify", content=image, headers=headers, timeout=60)


def test_sigterm_finishes_queued_work_then_exits(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(max_batch_size=8, max_wait_ms=2000)
    with ThreadPoolExecutor(3) as pool:
        pending = [pool.submit(classify, server.url, draw(seed=s)) for s in range(3)]
        wait_for(lambda: server.sample("vit_queue_depth", graph="fast") == 3, "3 queued images")
        server.process.send_signal(signal.SIGTERM)
        answers = [p.result() for p in pending]
    assert [a.status_code for a in answers] == [200, 200, 200]  # nothing lost
    assert all(len(a.json()["results"][0]["predictions"]) == 4 for a in answers)
    assert server.process.wait(30) == -signal.SIGTERM  # uvicorn re-raises it after draining
    with pytest.raises(httpx.ConnectError):
        classify(server.url, draw())
