"""The `serve` fixture: `vit-serve` in a child process, stopped with SIGTERM after the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from live import START_TIMEOUT, Server, free_port, ready


@pytest.fixture
def serve(tiny_bundle: Path, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """serve(max_batch_size=8, ..., env={...}) → a running `python -m service.cli` on a free port
    (env: variables added to its environment)."""
    started: list[Server] = []

    def start(
        bundle: Path | None = None, env: dict[str, str] | None = None, **settings: object
    ) -> Server:
        settings.setdefault("drain_delay_s", 0)  # tests that want the delay ask for it
        port = free_port()
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
        command = [sys.executable, "-m", "service.cli", f"--bundle={bundle or tiny_bundle}"]
        command += [f"--port={port}", "--providers=cpu", "--log-level=warning", *flags]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("VIT_")}
        log = tmp_path / f"server-{port}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                command, env={**environment, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
            )
        server = Server(f"http://127.0.0.1:{port}", process, log)
        started.append(server)
        deadline = time.monotonic() + START_TIMEOUT
        while not ready(server.url):
            assert process.poll() is None, f"vit-serve exited:\n{server.output()}"
            assert time.monotonic() < deadline, f"vit-serve never became ready:\n{server.output()}"
            time.sleep(0.05)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(30)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
