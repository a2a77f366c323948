"""Helpers for tests against real servers on 127.0.0.1: `vit-serve` in a child process, or uvicorn
in a thread when a test brings its own engine (the fault-injection seam), such as `Gated`."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI
from net import free_port, sample, wait_for
from prometheus_client.parser import text_string_to_metric_families

from service.inference.engine import Engine
from vit_core.bundle import load_bundle

START_TIMEOUT = 90.0  # seconds; the machine running the tests may be busy


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def sample(self, name: str, **labels: str) -> float:
        return sample(self.url, name, **labels)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def post_images(self, path: str, images: list[bytes], kind: str = "image/png") -> Any:
        """The images as multipart file parts; the JSON answer, which must be a 200."""
        suffix = kind.removeprefix("image/")
        files = [("file", (f"{i}.{suffix}", b, kind)) for i, b in enumerate(images)]
        answer = httpx.post(f"{self.url}{path}", files=files, timeout=120)
        assert answer.status_code == 200, answer.text
        return answer.json()


def instance_pids(url: str) -> dict[str, int]:
    """The instance's processes by name ("supervisor", "engine", "front-0", …), from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        s.labels["process"]: int(s.labels["pid"])
        for family in text_string_to_metric_families(text)
        if family.name == "vit_process_resident_memory_bytes"
        for s in family.samples
    }


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """uvicorn on 127.0.0.1 in a thread of this process, for apps built around a test's engine."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.started, "uvicorn to start", START_TIMEOUT)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


class Gated(Engine):
    """The real engine, whose batches wait at a gate the test opens. A lone request on an idle
    service runs at once, so a test that needs work to *stay queued* (a full queue, a deadline, a
    client leaving, a drain) closes the gate, sends one request to hold the engine (`entered`),
    and queues the rest behind it for as long as it likes. One lane, so that the request held is
    the whole engine's work (a second lane would take the next batch)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, load_bundle(folder), "cpu", lanes=1)
        self.gate = threading.Event()
        self.gate.set()  # open for the warm-up
        self.entered = threading.Event()

    def run(
        self, graph: str, pixels: np.ndarray, lane: int = 0, alone: bool = True
    ) -> dict[str, np.ndarray]:
        if not self.gate.is_set():
            self.entered.set()
            assert self.gate.wait(60), "the test never opened the gate"
        return super().run(graph, pixels, lane, alone)
