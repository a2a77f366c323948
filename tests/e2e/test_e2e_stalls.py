"""The event loop under the three loads that once stalled it (issue 22, part 6), each against a real
`vit-serve` with one front serving the demo bundle, watched by /healthz probes from another
process (probe.py): the probes' 99th percentile stays under 100 ms.

    a body of a million one-byte chunks (6 MB on the wire)   was: 5.7 s, probes p99 1.5 s
    16 gzip bombs at once (~30 kB inflating to 30 MB each)   was: probes p99 0.3–0.7 s
    32 /embed requests at once, 64 images each               was: probes p99 0.24–0.6 s
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
from collections.abc import Callable

import hostile
import httpx
import pytest
from live import Server
from test_e2e_attacks import multipart, probing
from test_e2e_hostile_v2 import (
    DEMO,
    INFER,
    demo,
    gzip_bomb,
    image_input,
    padded,
    post_all,
    rounds,
)

pytestmark = pytest.mark.skipif(
    not (DEMO / "model.json").is_file(), reason="the demo bundle (models/demo) is not there"
)
PROBE_LIMIT_S = 0.1  # the issue's bound on the probes' 99th percentile
WORST_S = 1.0  # and a looser one on the worst probe: a 2-core machine shared with the test


def assert_answering(latencies: list[float]) -> None:
    ordered = sorted(latencies)
    p99, worst = ordered[int(len(ordered) * 0.99)], ordered[-1]
    shown = f"p99 {p99 * 1000:.1f} ms, worst {worst * 1000:.0f} ms of {len(ordered)} probes"
    assert len(ordered) > 50 and p99 < PROBE_LIMIT_S and worst < WORST_S, shown


def one_byte_chunks(count: int) -> bytes:
    """A chunked /classify request whose body comes in `count` chunks of one byte each."""
    head = (
        b"POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    return head + b"1\r\nx\r\n" * count + b"0\r\n\r\n"


def send_raw(server: Server, request: bytes) -> bytes:
    """`request` on a connection of its own; the whole answer, once the server closes it."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_body_of_a_million_one_byte_chunks(serve: Callable[..., Server]) -> None:
    server = demo(serve)
    request = one_byte_chunks(1_000_000)
    answers = []
    with probing(server.url) as latencies:
        until = time.monotonic() + 5  # again and again: a few hundred probes watch it
        while not answers or time.monotonic() < until:
            answers.append(send_raw(server, request))
    for answer in answers:  # a body of 'x's: not an image, said precisely
        assert answer.startswith(b"HTTP/1.1 400") and b'"invalid_image"' in answer, answer[:300]
    assert_answering(latencies)


def whitespace_bomb() -> bytes:
    """33 kB that inflate to 31 MB of JSON: a one-image request padded with spaces."""
    request = json.dumps({"inputs": [image_input(hostile.jpeg())]}).encode()
    return gzip.compress(padded(request, 31_000_000), 9)


@pytest.mark.parametrize(
    ("bomb", "expected"),
    [(whitespace_bomb, {413, 429}), (gzip_bomb, {200, 429})],
    ids=["padding, refused once counted", "a 7.5 MP BMP, answered"],
)
def test_sixteen_gzip_bombs_at_once(
    serve: Callable[..., Server], bomb: Callable[[], bytes], expected: set[int]
) -> None:
    server = demo(serve)
    requests = [(INFER, {"content": bomb(), "headers": {"Content-Encoding": "gzip"}})] * 16
    with probing(server.url) as latencies:
        statuses = {answer.status_code for answer in rounds(server.url, requests, seconds=5)}
    assert statuses <= expected and min(expected) in statuses, statuses  # 429: the budget
    assert_answering(latencies)


def test_thirty_two_embeds_of_sixty_four_images_at_once(serve: Callable[..., Server]) -> None:
    server = demo(serve)
    body, kind = multipart([hostile.jpeg(64 + i, 48) for i in range(64)])
    requests = [("/embed", {"content": body, "headers": {"Content-Type": kind}})] * 32
    with probing(server.url) as latencies:
        answers = asyncio.run(post_all(server.url, requests))
    statuses = {answer.status_code for answer in answers}
    assert statuses <= {200, 429} and 200 in statuses, statuses
    served = [a.json() for a in answers if a.status_code == 200]
    assert all(len(answer["results"]) == 64 for answer in served)
    assert_answering(latencies)
    assert httpx.get(f"{server.url}/readyz").status_code == 200
