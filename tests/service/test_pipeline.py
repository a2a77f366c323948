"""The engine's request path on its own: the real preprocessor, batcher and ONNX Runtime engine
of the tiny bundle, with one decode thread so that the order of the decodes is known."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from service.inference.batcher import Batcher
from service.inference.engine import Engine
from service.inference.pipeline import Pipeline
from service.metrics import Metrics
from tests.conftest import Draw
from vit_core.bundle import load_bundle
from vit_core.errors import ClientDisconnected, InvalidImage
from vit_core.images import Preprocessor

IMAGES = 8  # a request's images: one thread decodes them one after another


class Watched(Preprocessor):
    """The real preprocessor, which says when the first decode has begun."""

    began = threading.Event()

    def __call__(self, data: bytes, keep_image: bool = False) -> Any:
        self.began.set()
        return super().__call__(data, keep_image)


class Parts:
    def __init__(self, folder: Path) -> None:
        m = load_bundle(folder)
        engine = Engine(folder, m, "cpu")
        self.metrics = Metrics()
        self.batcher = Batcher(
            engine.run_rows,
            graphs=m.graphs,
            max_batch_size=engine.capacity,
            max_wait_s=0.002,
            max_queue_images=64,
            metrics=self.metrics,
        )
        self.executor = ThreadPoolExecutor(1, "decode")
        Watched.began = threading.Event()
        preprocessor = Watched(m.preprocess, m.image_size, 1 << 26, m.pixels)
        self.pipeline = Pipeline(preprocessor, self.batcher, self.executor, self.metrics)

    def decodes(self) -> int:
        """The images the decode threads have taken on so far (refused ones included)."""
        count = self.metrics.registry.get_sample_value("vit_preprocess_duration_seconds_count")
        return int(count or 0)

    def run(self, images: list[bytes], disconnected: Awaitable[Any]) -> Any:
        async def go() -> Any:
            deadline = asyncio.get_running_loop().time() + 30
            return await self.pipeline.run(
                "fast", images, deadline=deadline, disconnected=disconnected
            )

        return asyncio.run(go())


@pytest.fixture
def parts(tiny_bundle: Path) -> Iterator[Parts]:
    made = Parts(tiny_bundle)
    made.batcher.start()
    yield made
    made.executor.shutdown()
    made.batcher.close(5)


def never() -> Awaitable[Any]:
    return asyncio.Event().wait()


def test_a_request_answers_every_image(parts: Parts, draw: Draw) -> None:
    outcome = parts.run([draw(seed=i) for i in range(IMAGES)], never())
    assert len(outcome.outputs["logits"]) == IMAGES
    assert parts.decodes() == IMAGES


def test_a_refused_image_drops_the_images_not_yet_decoded(parts: Parts, draw: Draw) -> None:
    """The first image is refused: the one the thread had already started may finish, the rest
    never run, and none runs after the answer (the decode budget and the heap the engine trims
    when idle are the request's until then)."""
    images = [b"not an image"] + [draw(1600, 1200, seed=i) for i in range(IMAGES - 1)]
    with pytest.raises(InvalidImage, match="image 0"):
        parts.run(images, never())
    answered = parts.decodes()
    parts.executor.shutdown(wait=True)  # whatever was still queued or running ends here
    assert answered == parts.decodes() <= 2


def test_a_client_gone_drops_its_images_and_waits_for_the_running_one(
    parts: Parts, draw: Draw
) -> None:
    images = [draw(1600, 1200, seed=i) for i in range(IMAGES)]

    async def gone() -> None:  # the client leaves once the first decode is under way
        assert await asyncio.to_thread(Watched.began.wait, 10)

    with pytest.raises(ClientDisconnected):
        parts.run(images, gone())
    answered = parts.decodes()
    parts.executor.shutdown(wait=True)
    assert answered == parts.decodes() < IMAGES
