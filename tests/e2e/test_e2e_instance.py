"""The instance as processes, tried from outside: a real `vit-serve --workers 2` (supervisor,
engine, two fronts) under load, with one of its processes killed by PID. Nothing may hang: every
request in flight ends (answered, refused with 503, or its connection closed), and the instance
either carries on (a front restarted) or stops for its orchestrator (the engine gone). A killed
supervisor leaves no process serving, and the next start removes what it left."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from live import START_TIMEOUT, Server, free_port, instance_pids, ready, wait_for

from bench.rawload import by_role, thread_cpu

JPEG = {"Content-Type": "image/jpeg"}
ENGINE_THREADS = {"vit-engine", "onnxruntime", "decode", "batcher"}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@contextmanager
def load(url: str, image: bytes, clients: int = 6) -> Iterator[list[str]]:
    """`clients` loops posting /classify until the block ends; each request's outcome is
    recorded: its status, or the kind of transport error. A request that hangs fails the test
    (its read timeout is far shorter than the test's)."""
    outcomes: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(timeout=httpx.Timeout(20, connect=5)) as client:
            while not stop.is_set():
                try:
                    answer = client.post(f"{url}/classify", content=image, headers=JPEG)
                    outcomes.append(str(answer.status_code))
                except httpx.ReadTimeout:
                    outcomes.append("hung")
                except httpx.TransportError as e:
                    outcomes.append(type(e).__name__)
                    time.sleep(0.05)

    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(loop)
        try:
            yield outcomes
        finally:
            stop.set()


def test_a_killed_engine_answers_503_everywhere_and_stops_the_instance(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(workers=2, drain_delay_s=0)
    engine = instance_pids(server.url)["engine"]
    with load(server.url, draw()) as outcomes:
        wait_for(lambda: outcomes.count("200") >= 20, "answers under load")
        os.kill(engine, signal.SIGKILL)
        assert server.process.wait(60) not in (0, None)  # stopped for its orchestrator
    assert "hung" not in outcomes
    after = outcomes[outcomes.index("200") :]
    assert set(after) <= {"200", "503", "ConnectError", "RemoteProtocolError", "ReadError"}
    assert "503" in after or "ConnectError" in after  # the loss was seen, not waited out


def test_a_killed_front_is_restarted_and_the_other_serves_on(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(workers=2, drain_delay_s=0)
    before = instance_pids(server.url)
    with load(server.url, draw()) as outcomes:
        wait_for(lambda: outcomes.count("200") >= 20, "answers under load")
        os.kill(before["front-0"], signal.SIGKILL)
        old = before["front-0"]
        restarted = lambda: instance_pids(server.url).get("front-0", old) != old  # noqa: E731
        wait_for(restarted, "front-0 to be started again", START_TIMEOUT)
        wait_for(lambda: ready(server.url), "the instance to be ready again", START_TIMEOUT)
        served = outcomes.count("200")
        wait_for(lambda: outcomes.count("200") >= served + 20, "answers after the restart")
    assert "hung" not in outcomes
    assert server.process.poll() is None  # the instance carried on
    after = instance_pids(server.url)
    assert after["engine"] == before["engine"] and after["front-1"] == before["front-1"]
    assert server.sample("vit_batch_size_count", graph="fast") > 0  # the engine's, in the sum


def test_a_killed_supervisor_leaves_no_process_serving(tiny_bundle: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir="/tmp"))  # short: a socket lives there
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIT_")}
    env["TMPDIR"] = str(scratch)

    def start() -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        command = [sys.executable, "-m", "service.cli", f"--bundle={tiny_bundle}",
                   f"--port={port}", "--providers=cpu", "--workers=2", "--drain-delay-s=0",
                   "--log-level=warning"]  # fmt: skip
        process = subprocess.Popen(command, env=env)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: ready(url), "vit-serve", START_TIMEOUT)
        return process, url

    first, url = start()
    children = instance_pids(url)
    first.kill()  # SIGKILL: no drain, no clean-up of its own
    first.wait()
    wait_for(lambda: all(gone(pid) for pid in children.values()), "every child to exit", 60)
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nobody listens any more
    assert len(list(scratch.glob("vit-instance-*"))) == 1  # what the killed one left
    second, _ = start()
    assert len(list(scratch.glob("vit-instance-*"))) == 1  # the stale folder is gone
    second.send_signal(signal.SIGTERM)
    assert second.wait(60) == 0
    assert list(scratch.glob("vit-instance-*")) == []
    subprocess.run(["rm", "-rf", str(scratch)], check=True)


def test_ps_and_top_name_each_process_and_the_engines_threads(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(workers=2)
    server.post_images("/classify", [draw()], "image/jpeg")  # starts a decode thread
    pids = instance_pids(server.url)
    for role in ("engine", "front-0", "front-1"):
        title = Path(f"/proc/{pids[role]}/cmdline").read_bytes().replace(b"\0", b" ").strip()
        assert title.decode() == f"vit-serve {role}"
        assert f"vit-{role}/{pids[role]}" in thread_cpu(pids[role])  # the main thread: top's name
    # The engine's threads by role, as bench/frontend.py splits its CPU: none is left `python`.
    # ONNX Runtime's intra-op threads (where a batch runs on more than one core) take the name
    # of the thread that opened the sessions, meanwhile.
    roles = set(by_role(thread_cpu(pids["engine"])))
    assert {"vit-engine", "decode", "batcher"} <= roles <= ENGINE_THREADS, roles
