"""Overload (429), deadline (504) and a client that leaves: all through a real uvicorn, with tiny
limits and the engine held at a gate (live.Gated) so that the situations are certain, not
timing-dependent: one request holds the engine, the ones behind it stay queued."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hosted import local_app
from live import Gated, ready, sample, serve_in_thread, wait_for

from service.settings import Settings

Release = Callable[[], int]  # opens the gate; the holding request's status


def classify(url: str, *images: bytes, timeout: float = 60) -> httpx.Response:
    files = [("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(images)]
    return httpx.post(f"{url}/classify", files=files, timeout=timeout)


@contextmanager
def held(bundle: Path, draw: Callable[..., bytes], **limits: Any) -> Iterator[tuple[str, Release]]:
    """A ready server whose engine is held by one request in flight, until release()."""
    engine = Gated(bundle)
    config = Settings(bundle=bundle, providers="cpu", max_batch_size=4, **limits)
    with local_app(config, engine) as app, serve_in_thread(app) as url:
        wait_for(lambda: ready(url), "warm-up")
        engine.gate.clear()
        with ThreadPoolExecutor(1) as pool:
            holder = pool.submit(classify, url, draw(seed=9))
            assert engine.entered.wait(30)

            def release() -> int:
                engine.gate.set()
                return holder.result().status_code

            try:
                yield url, release
            finally:
                engine.gate.set()


def test_a_full_queue_answers_429_at_once_and_queued_work_still_finishes(
    tiny_bundle: Path, draw: Callable[..., bytes]
) -> None:
    with held(tiny_bundle, draw, max_queue_images=2, max_images_per_request=2) as (url, release):
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(classify, url, draw(seed=1), draw(seed=2))
            wait_for(lambda: sample(url, "vit_queue_depth", graph="fast") == 2, "a full queue")
            refused = classify(url, draw(seed=3))
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "overloaded"
            assert release() == 200
            assert (
                queued.result().status_code == 200
            )  # the queued work ran once the engine was free
        assert sample(url, "vit_rejections_total", reason="overloaded") == 1


def test_a_deadline_answers_504_and_the_queued_work_never_runs(
    tiny_bundle: Path, draw: Callable[..., bytes]
) -> None:
    with held(tiny_bundle, draw, request_timeout_s=1) as (url, release):
        answer = classify(url, draw())  # queued behind the held batch, past its deadline
        assert answer.status_code == 504 and answer.json()["error"]["code"] == "timeout"
        assert sample(url, "vit_queue_depth", graph="fast") == 0  # dropped from the queue
        assert release() == 504  # the holder's deadline passed too, while it ran
        assert sample(url, "vit_batch_size_sum", graph="fast") == 1  # only the held image ran
        assert sample(url, "vit_inflight_images") == 0
        assert sample(url, "vit_rejections_total", reason="timeout") == 2


def test_work_for_a_client_that_left_is_dropped_before_it_runs(
    tiny_bundle: Path, draw: Callable[..., bytes]
) -> None:
    with held(tiny_bundle, draw) as (url, release):
        with pytest.raises(httpx.ReadTimeout):
            classify(url, draw(), timeout=0.5)  # the client gives up and closes
        wait_for(
            lambda: sample(url, "vit_rejections_total", reason="client_disconnected") == 1,
            "the server to notice the client left",
        )
        assert sample(url, "vit_queue_depth", graph="fast") == 0
        assert release() == 200
        assert sample(url, "vit_batch_size_sum", graph="fast") == 1  # only the held image ran
        assert sample(url, "vit_inflight_images") == 0
        assert classify(url, *[draw(seed=s) for s in range(4)]).status_code == 200
