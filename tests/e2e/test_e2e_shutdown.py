"""SIGTERM: the server says not-ready, stops accepting, finishes what it holds, then exits."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from hosted import engine_thread
from live import Gated, Server, free_port, ready, wait_for

from service.app import create_app
from service.front import DrainingServer
from service.runtime import Runtime
from service.settings import Settings


def classify(url: str, image: bytes) -> httpx.Response:
    headers = {"Content-Type": "image/jpeg"}
    return httpx.post(f"{url}/classify", content=image, headers=headers, timeout=60)


def test_sigterm_finishes_queued_work_then_stops(
    tiny_bundle: Path, draw: Callable[..., bytes]
) -> None:
    """vit-serve's own server class in a thread, its engine held at a gate: one request holds the
    engine and two wait in the queue when the signal comes (the handler is called as the signal
    would call it: a thread cannot take signals)."""
    engine = Gated(tiny_bundle)
    settings = Settings(bundle=tiny_bundle, providers="cpu", max_batch_size=8, drain_delay_s=0.1)
    with engine_thread(settings, engine) as hosted:
        runtime = hosted.runtime(settings)
        port = free_port()
        config = uvicorn.Config(
            create_app(settings, runtime), host="127.0.0.1", port=port, log_config=None
        )
        server = DrainingServer(config, runtime)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: ready(url), "warm-up", 90)
        engine.gate.clear()
        with ThreadPoolExecutor(3) as pool:
            holder = pool.submit(classify, url, draw(seed=0))
            assert engine.entered.wait(30)
            queued = [pool.submit(classify, url, draw(seed=s)) for s in (1, 2)]
            wait_for(lambda: depth(runtime) == 2, "2 queued images")
            server.handle_exit(signal.SIGTERM, None)
            assert runtime.draining and not ready(url)
            engine.gate.set()
            answers = [f.result() for f in (holder, *queued)]
        assert [a.status_code for a in answers] == [200, 200, 200]  # nothing lost
        assert all(len(a.json()["results"][0]["predictions"]) == 4 for a in answers)
        thread.join(30)
        assert not thread.is_alive() and server.drained
    assert hosted.state.phase == "stopped"  # then the engine drained too


def depth(runtime: Runtime) -> float | None:
    return runtime.metrics.registry.get_sample_value("vit_queue_depth", {"graph": "fast"})


def test_sigterm_to_vit_serve_turns_unready_answers_what_arrives_then_exits(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(drain_delay_s=2, log_level="info")
    server.process.send_signal(signal.SIGTERM)
    assert httpx.get(f"{server.url}/readyz").status_code == 503  # the listener is still open
    assert classify(server.url, draw()).status_code == 200  # and work arriving still runs
    assert server.process.wait(30) == 0  # a clean drain: not "Terminated" (143)
    with pytest.raises(httpx.ConnectError):
        classify(server.url, draw())
    log = server.output()
    assert "warming up: " in log and f"ready: tiny-vit answers on {server.url}" in log
