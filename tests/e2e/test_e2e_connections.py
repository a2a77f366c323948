"""What a client may hold open, tried with raw sockets against a real `vit-serve`: idle and
slowloris connections are closed, the connection cap refuses with 429, smuggling-shaped requests
are refused and the connection closed, bodies that stop are cut off with 408 without ever holding
a request slot, busy servers refuse new work but keep answering probes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from live import Server, instance_pids, wait_for

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
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(max_concurrent_requests=2, request_timeout_s=60)
    png = draw(fmt="PNG")
    engine = instance_pids(server.url)["engine"]
    os.kill(engine, signal.SIGSTOP)  # two whole requests then wait on it: both in progress
    try:
        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(_classify, server, png) for _ in range(2)]

            def third_refused() -> bool:
                # A probe that took its slot before a held request arrived refuses that one
                # instead (429): it is sent again, until both wait on the engine.
                for i, answer in enumerate(held):
                    if answer.done():
                        assert answer.result().status_code == 429, answer.result().text
                        held[i] = pool.submit(_classify, server, png)
                return _classify_status(server) == 429

            wait_for(third_refused, "a third request to be refused")
            v2 = httpx.post(f"{server.url}/v2/models/tiny-vit/infer", json={}, timeout=30)
            assert v2.status_code == 429 and v2.headers["retry-after"] == "1"
            assert set(v2.json()) == {"error"} and "requests are in progress" in v2.json()["error"]
            assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200  # exempt
            assert httpx.get(f"{server.url}/healthz").status_code == 200
            assert httpx.get(f"{server.url}/readyz").status_code == 200
            os.kill(engine, signal.SIGCONT)
            assert [answer.result().status_code for answer in held] == [200, 200]
    finally:
        os.kill(engine, signal.SIGCONT)
    assert _classify_status(server) == 400  # work is taken again (an empty body)


BODY_DUE = (
    b"POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: 99\r\n\r\n"
)


def test_a_body_that_stops_is_answered_408_and_closed_and_never_held_a_slot(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(max_concurrent_requests=2, body_timeout_s=2)
    with connect(server) as one, connect(server) as two:
        started = time.monotonic()
        for sock in (one, two):
            sock.sendall(BODY_DUE + b"x")  # a byte of the 99 promised, then nothing
        assert _classify(server, draw(fmt="PNG")).status_code == 200  # the two uploads hold no slot
        answers = [read_all(sock) for sock in (one, two)]
        waited = time.monotonic() - started
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
        assert json.loads(body)["error"]["code"] == "body_timeout"
    assert 2 <= waited < 20  # cut off at the pause limit, not at the request deadline (30 s)
    assert server.sample("vit_rejections_total", reason="body_timeout") == 2


def test_300_uploads_at_a_byte_a_second_lock_nobody_out(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    """The attack that once held all 256 slots for 30 s: every other client is served while it
    lasts, and each trickler is cut off once it falls behind the pace (here 3 s)."""
    server = serve(body_timeout_s=3)
    outcome = asyncio.run(_trickle_attack(server, draw(fmt="PNG"), tricklers=300))
    assert outcome.served_during >= 5 and outcome.others == {200}, outcome
    assert outcome.tricklers == {408} and max(outcome.cut_after) < 15, outcome


@dataclass
class Attack:
    tricklers: set[int]  # statuses the trickling clients got
    cut_after: list[float]  # seconds from each one's head to its answer
    others: set[int]  # statuses everyone else got while the attack lasted
    served_during: int  # other requests answered before the first trickler was cut off


async def _trickle_attack(server: Server, png: bytes, tricklers: int) -> Attack:
    host, port_ = server.url.removeprefix("http://").split(":")
    first_cut = asyncio.Event()

    async def trickle() -> tuple[int, float]:
        reader, writer = await asyncio.open_connection(host, int(port_))
        writer.write(BODY_DUE)
        started = time.monotonic()
        try:
            while not (answer := await _read_for(reader, 1.0)):
                writer.write(b"x")  # a byte a second
                await writer.drain()
            first_cut.set()
            return int(answer.split(b" ")[1]), time.monotonic() - started
        finally:
            writer.close()

    async def others(client: httpx.AsyncClient) -> tuple[set[int], int]:
        statuses, served = set(), 0
        while not attack.done():
            answer = await client.post(
                "/classify", content=png, headers={"Content-Type": "image/png"}
            )
            statuses.add(answer.status_code)
            served += not first_cut.is_set()
        return statuses, served

    attack = asyncio.gather(*(trickle() for _ in range(tricklers)))
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        statuses, served = await others(client)
    results = await attack
    return Attack({s for s, _ in results}, [t for _, t in results], statuses, served)


async def _read_for(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server has answered within `seconds` (b"" if nothing yet)."""
    try:
        return await asyncio.wait_for(reader.read(65536), seconds)
    except TimeoutError:
        return b""


def _classify(server: Server, png: bytes) -> httpx.Response:
    headers = {"Content-Type": "image/png"}
    return httpx.post(f"{server.url}/classify", content=png, headers=headers, timeout=90)


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
