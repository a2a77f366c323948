"""Faults injected through a real seam: the app is built around an Engine subclass whose run
raises when a batch holds a pure-white image, and served by uvicorn on 127.0.0.1.

A failing batch fails exactly its requests and the service carries on; a worker that dies fails
everything waiting, turns /readyz (and /healthz) to 503, and leaves no request hanging.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from hosted import local_app
from live import sample, serve_in_thread
from PIL import Image

from service.inference.engine import Engine
from service.settings import Settings
from vit_core.bundle import load_bundle

WHITE = Image.new("RGB", (40, 40), (255, 255, 255))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class Fatal(BaseException):
    """Not an Exception: nothing in a batch handler catches it, so the worker thread dies."""


class Faulty(Engine):
    """Raises on a batch holding a white image. Once `hold` is set (after the start-up warm-up),
    the next other batch waits for it, so requests queue behind a busy engine (one lane: the
    batch held is the whole engine's); `entered` says so."""

    def __init__(self, folder: Path, fault: BaseException) -> None:
        super().__init__(folder, load_bundle(folder), "cpu", lanes=1)
        self.fault = fault
        self.hold: threading.Event | None = None
        self.entered = threading.Event()

    def run(
        self, graph: str, pixels: np.ndarray, lane: int = 0, alone: bool = True
    ) -> dict[str, np.ndarray]:
        if (pixels >= 1.0).all(axis=(1, 2, 3)).any():  # white normalises to exactly 1.0
            raise self.fault
        if self.hold is not None and not self.entered.is_set():
            self.entered.set()
            self.hold.wait()
        return super().run(graph, pixels, lane, alone)


async def post_all(url: str, images: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        headers = {"Content-Type": "image/png"}
        return list(
            await asyncio.gather(
                *(client.post("/classify", content=i, headers=headers) for i in images)
            )
        )


async def behind_a_busy_engine(
    url: str, engine: Faulty, release: threading.Event, batch: list[bytes]
) -> list[httpx.Response]:
    """One request holds the engine while `batch` queues up behind it as one batch (by the
    queue-depth gauge, not by timing); then the engine is let go. Every answer, blocker first."""
    blocker = png(Image.new("RGB", (40, 40), (0, 0, 90)))
    first = asyncio.ensure_future(post_all(url, [blocker]))
    deadline = time.monotonic() + 30  # a test that waits forever says nothing: it fails instead
    while not engine.entered.is_set():
        assert time.monotonic() < deadline, "the engine never took the blocker"
        await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(post_all(url, batch))
    while sample(url, "vit_queue_depth") < len(batch):
        assert time.monotonic() < deadline, "the batch never queued behind the blocker"
        await asyncio.sleep(0.01)
    release.set()
    return [*await first, *await waiting]


def test_a_failing_batch_fails_exactly_its_requests_and_the_service_carries_on(
    tiny_bundle: Path,
) -> None:
    release = threading.Event()
    engine = Faulty(tiny_bundle, RuntimeError("CUDA error at /secret/kernel.cu:42"))
    settings = Settings(bundle=tiny_bundle, max_batch_size=3, max_wait_ms=5000)
    fine = [png(Image.new("RGB", (40, 40), (30 * i, 0, 0))) for i in range(1, 7)]
    with local_app(settings, engine) as app, serve_in_thread(app) as url:
        assert httpx.get(f"{url}/readyz").status_code == 200
        engine.hold = release  # warmed up: the next batch holds the engine
        answers = asyncio.run(behind_a_busy_engine(url, engine, release, [png(WHITE), *fine[:2]]))
        failed = answers[1:]  # one full batch
        assert [a.status_code for a in answers] == [200, 500, 500, 500]
        for answer in failed:
            assert answer.json() == {
                "error": {
                    "code": "internal",
                    "message": "internal error; the request can be retried",
                }
            }
        later = asyncio.run(post_all(url, fine[2:5]))
        assert [a.status_code for a in later] == [200, 200, 200]
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert sample(url, "vit_failures_total", reason="batch_error") == 1
        assert sample(url, "vit_requests_total", endpoint="/classify", status="500") == 3
        assert sample(url, "vit_requests_total", endpoint="/classify", status="200") == 4


def test_a_dead_worker_fails_the_waiting_turns_unready_and_hangs_no_one(tiny_bundle: Path) -> None:
    release = threading.Event()
    engine = Faulty(tiny_bundle, Fatal())
    settings = Settings(bundle=tiny_bundle, max_batch_size=3, max_wait_ms=5000)
    others = [png(Image.new("RGB", (40, 40), (0, 90 * i, 0))) for i in range(1, 3)]
    with local_app(settings, engine) as app, serve_in_thread(app) as url:
        assert httpx.get(f"{url}/readyz").status_code == 200
        engine.hold = release  # warmed up: the next batch holds the engine
        answers = asyncio.run(behind_a_busy_engine(url, engine, release, [png(WHITE), *others]))
        assert [a.status_code for a in answers] == [200, 500, 500, 500]  # every one answered
        ready, health = httpx.get(f"{url}/readyz"), httpx.get(f"{url}/healthz")
        assert (ready.status_code, health.status_code) == (503, 503)
        assert "restart" in ready.json()["error"]["message"]
        after = asyncio.run(post_all(url, others[:1]))[0]
        assert after.status_code == 503 and after.json()["error"]["code"] == "not_ready"
        assert sample(url, "vit_failures_total", reason="worker_died") == 1
