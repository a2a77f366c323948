"""What a client may hold open, tried with raw sockets against a real `vit-serve`: idle and
slowloris connections are closed, the connection cap refuses with 429, smuggling-shaped requests
are refused and the connection closed, busy servers refuse new work but keep answering probes."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from live import Server, wait_for

HEAD = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"


@contextmanager
def connect(server: Server, timeout: float = 30) -> Iterator[socket.socket]:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        yield sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (socket timeout: the test fails)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_idle_and_slowloris_connections_are_closed(serve: Callable[..., Server]) -> None:
    server = serve(header_timeout_s=1)
    with connect(server) as idle, connect(server) as slow:
        started = time.monotonic()
        for byte in HEAD[:-4]:  # the head, a byte at a time, never finished
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)
            if time.monotonic() - started > 20:
                break
        assert read_all(idle) == b""  # closed without a word: it never asked anything
        assert b"HTTP/1.1" not in read_all(slow)
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # everyone else is served


def test_a_finished_request_then_silence_is_closed_too(serve: Callable[..., Server]) -> None:
    server = serve(header_timeout_s=1, keep_alive_s=60)
    with connect(server) as sock:
        sock.sendall(HEAD)
        answer = read_all(sock)  # the answer, then the close when no second head comes
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1


V2_INFER = b"POST /v2/models/tiny-vit/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"
NATIVE = {"error": {"code": "overloaded", "message": "too many open connections; retry shortly"}}


def test_one_connection_over_the_cap_is_refused_with_429_in_its_routes_shape(
    serve: Callable[..., Server],
) -> None:
    server = serve(max_connections=4, header_timeout_s=60)
    sockets = []
    try:
        for _ in range(4):
            sockets.append(socket.create_connection(("127.0.0.1", port(server)), timeout=30))
        wait_for(lambda: _refused(server, HEAD) == NATIVE, "the fifth connection to be refused")
        assert _refused(server, V2_INFER) == {"error": NATIVE["error"]["message"]}
        assert _refused(server, b"") == NATIVE  # it never says where it was going
    finally:
        for sock in sockets:
            sock.close()
    wait_for(lambda: _healthy(server), "the server to take connections again")


def test_content_length_with_transfer_encoding_is_refused_and_nothing_smuggled(
    serve: Callable[..., Server],
) -> None:
    server = serve()
    smuggled = (
        b"POST /classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
        b"Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + HEAD
    )
    with connect(server) as sock:
        sock.sendall(smuggled)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400") and b'"malformed_request"' in answer
    assert answer.count(b"HTTP/1.1") == 1, answer  # the hidden GET was never answered
    assert server.sample("vit_rejections_total", reason="malformed_request") == 1


def test_busy_servers_refuse_work_with_429_and_still_answer_probes(
    serve: Callable[..., Server],
) -> None:
    server = serve(max_concurrent_requests=2, request_timeout_s=60)
    body_due = (
        b"POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
        b"Content-Length: 99\r\n\r\n"
    )
    with connect(server) as one, connect(server) as two:
        one.sendall(body_due)  # two requests whose bodies never finish: both in progress
        two.sendall(body_due)
        wait_for(lambda: _classify_status(server) == 429, "a third request to be refused")
        v2 = httpx.post(f"{server.url}/v2/models/tiny-vit/infer", json={}, timeout=30)
        assert v2.status_code == 429 and v2.headers["retry-after"] == "1"
        assert set(v2.json()) == {"error"} and "requests are in progress" in v2.json()["error"]
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200  # exempt
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    wait_for(lambda: _classify_status(server) == 400, "work to be taken again")  # empty body


def test_sigterm_turns_readiness_off_while_the_listener_still_answers(
    serve: Callable[..., Server],
) -> None:
    server = serve(drain_delay_s=30)
    server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 503, "readiness off")
    body = httpx.get(f"{server.url}/readyz").json()
    assert body["error"]["message"] == "the service is shutting down"
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # still alive, still listening
    server.process.send_signal(signal.SIGTERM)  # a second signal skips the rest of the delay
    assert server.process.wait(30) == 0


def test_the_open_files_limit_is_raised_to_the_hard_limit(serve: Callable[..., Server]) -> None:
    server = serve()
    limits = Path(f"/proc/{server.process.pid}/limits").read_text()
    soft, hard = next(line.split()[3:5] for line in limits.splitlines() if "open files" in line)
    assert soft == hard


def port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _refused(server: Server, request: bytes) -> object:
    """The body of a 429 answered to `request` on a new connection (None for any other answer)."""
    with connect(server, timeout=10) as sock:
        sock.sendall(request)
        answer = read_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 429") or b"\r\nretry-after: 1" not in head.lower():
        return None
    return json.loads(body)


def _healthy(server: Server) -> bool:
    try:
        return httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _classify_status(server: Server) -> int:
    answer = httpx.post(f"{server.url}/classify", headers={"Content-Type": "image/png"}, timeout=30)
    return answer.status_code
