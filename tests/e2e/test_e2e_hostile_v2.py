"""Hostile input, round three (issue 22), against a real `vit-serve` serving the demo bundle (224
px, so four images' pixels are 602,112 JSON values and the value cap leaves room for everything
counted here): every body gets a precise 4xx with a small error, never a 5xx; a document is
counted before it is built; gzip bodies are held to the body budget by what they inflate to
(memory read from /proc); image headers are priced before Pillow walks them. The event loop is
watched by probes from another process (probe.py) throughout."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hostile
import httpx
import pytest
from live import Server, instance_pids
from PIL import Image
from test_e2e_attacks import multipart, peak_rss, probing, rss

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"
pytestmark = pytest.mark.skipif(
    not (DEMO / "model.json").is_file(), reason="the demo bundle (models/demo) is not there"
)
INFER = "/v2/models/vit-shapes-demo/infer"
LENGTH = "Inference-Header-Content-Length"
MiB = 1 << 20
BODY_MEMORY, DECODE_MEMORY = 160 * MiB, 256 * MiB
SLACK = 160 * MiB  # interpreters, ORT arenas, sockets, allocator rounding (as test_e2e_attacks)
# /healthz within this at the 99th percentile while the attacks run. Unguarded, the same attacks
# held it 1.2 s to over 10 s; what is left is the ordinary cost of 30 MB bodies on a 2-core
# machine: receiving them, and pydantic holding the GIL ~40 ms for each 31 MB document it
# parses (a few of those at once, on a machine shared with the test, reach 250 ms).
PROBE_LIMIT_S = 0.5
MAX_ERROR_BYTES = 4096  # no error body grows with what the client sent
PIXELS = 224 * 224 * 3


# -- the bodies -------------------------------------------------------------------------------


def image_input(*images: bytes) -> dict[str, Any]:
    data = [base64.b64encode(i).decode() for i in images]
    return {"name": "image", "datatype": "BYTES", "shape": [len(images)], "data": data}


def pixels(value: object) -> bytes:
    """One image's UINT8 pixels as JSON data, all 0 but one."""
    data = b",".join([b"0"] * (PIXELS - 1) + [json.dumps(value).encode()])
    head = b'{"inputs":[{"name":"pixels","datatype":"UINT8","shape":[1,224,224,3],"data":['
    return head + data + b"]}]}"


def many(item: bytes, count: int, where: str) -> bytes:
    """`count` copies of `item` in a list or object at `where` of an otherwise valid request."""
    items = b",".join(item % i if b"%d" in item else item for i in range(count))
    if where == "inputs":
        return b'{"inputs":[' + items + b"]}"
    ok = json.dumps(image_input(hostile.jpeg())).encode()
    if where == "parameters":
        return b'{"inputs":[' + ok + b'],"parameters":{' + items + b"}}"
    return b'{"inputs":[' + ok + b'],"outputs":[' + items + b"]}"


def with_field(field: str, value: Any) -> bytes:
    request: dict[str, Any] = {"inputs": [image_input(hostile.jpeg())]}
    if field in ("name", "datatype", "shape"):
        request["inputs"][0][field] = value
    elif field == "output name":
        request["outputs"] = [{"name": value}]
    elif field == "classification":
        request["outputs"] = [{"name": "logits", "parameters": {"classification": value}}]
    else:
        request[field] = value
    return json.dumps(request).encode()


def malformed() -> list[tuple[str, bytes, dict[str, Any], int, str]]:
    """(what, body, headers, status, a phrase of the message): each once a 500 or an echo."""
    huge = "x" * (30 * MiB)
    near = "y" * 256  # as long as a name may be: every message quoting it stays short
    return [
        ("length in superscript digits", b"{}", {LENGTH: "²".encode("latin-1")}, 400, LENGTH),
        ("length of a superscript one", b"{}", {LENGTH: b"\xb9"}, 400, LENGTH),
        ("length of 5,000 digits", b"{}", {LENGTH: "9" * 5000}, 400, LENGTH),
        ("pixel of 400 digits", pixels(10**400), {}, 422, "data must be 150,528 numbers"),
        ("pixel of 4,000 digits", pixels(10**4000), {}, 422, "data must be 150,528 numbers"),
        ('pixel "7"', pixels("7"), {}, 422, "not strings"),
        ("pixel true", pixels(True), {}, 422, "not true or false"),
        ("30 MB input name", with_field("name", huge), {}, 422, "at most 256 characters"),
        ("30 MB datatype", with_field("datatype", huge), {}, 422, "at most 256 characters"),
        ("30 MB output name", with_field("output name", huge), {}, 422, "at most 256 char"),
        ("30 MB classification", with_field("classification", huge), {}, 422, "at most 256"),
        ("30 MB id", with_field("id", huge), {}, 422, "at most 256 characters"),
        ("100,000 dims", with_field("shape", [1] * 100_000), {}, 422, "at most 8 items"),
        ("long input name", with_field("name", near), {}, 422, "no input 'yyyy"),
        ("long datatype", with_field("datatype", near), {}, 422, "it takes BYTES"),
        ("long output name", with_field("output name", near), {}, 422, "no output 'yyy"),
        ("long classification", with_field("classification", near), {}, 422, "must be int"),
        ("gzip with junk after it", gzip.compress(b"{}") + b"junk", {"Content-Encoding": "gzip"},
         422, "after the end of its gzip data"),
    ]  # fmt: skip


def counted() -> list[tuple[str, bytes, str]]:
    """(what, body, a phrase of the 413): documents that took 7–15 s to parse into a 422, and
    one of padding that held the GIL 56 ms to parse (a gzip bomb's inflated body, once)."""
    return [
        ("600,000 empty inputs", many(b"{}", 600_000, "inputs"), "objects"),
        ("600,000 null parameters", many(b'"k%d":null', 600_000, "parameters"), "keys"),
        ("600,000 outputs", many(b'{"name":"logits"}', 600_000, "outputs"), "objects"),
        ("600,000 empty lists", many(b"[]", 600_000, "inputs"), "lists"),
        ("31 MB of whitespace", padded(json.dumps({"inputs": [image_input(hostile.jpeg())]})
                                       .encode(), 31_000_000), "whitespace"),
    ]  # fmt: skip


def padded(request: bytes, spaces: int) -> bytes:
    """A JSON request with `spaces` bytes of whitespace before its closing brace."""
    return request[:-1] + b" " * spaces + b"}"


def gzip_bomb() -> bytes:
    """30 kB that inflate to 30 MB of JSON: a valid request for one 7.5 MP BMP (22.5 MB of
    black pixels, in base64), which the service decodes and answers."""
    picture = io.BytesIO()
    Image.new("RGB", (3000, 2500)).save(picture, "BMP")
    return gzip.compress(json.dumps({"inputs": [image_input(picture.getvalue())]}).encode(), 9)


def camera_jpeg() -> bytes:
    """A photo as a camera writes it: EXIF with IFD0, Exif and GPS directories (~160 entries),
    turned a quarter by its orientation."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turned
    for tag in range(0x0100, 0x0100 + 30):
        exif.setdefault(tag, 1)
    details = exif.get_ifd(0x8769)
    for k in range(100):
        details[0x9000 + k] = k
    gps = exif.get_ifd(0x8825)
    for k in range(1, 30):
        gps[k] = k
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 30, 30)).save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def strips_tiff() -> bytes:
    """A TIFF a row a strip (400 strips), deflated by libtiff, as Pillow writes it."""
    buffer = io.BytesIO()
    Image.new("RGB", (300, 400), (30, 200, 30)).save(
        buffer, "TIFF", compression="tiff_deflate", strip_size=300 * 3
    )
    return buffer.getvalue()


# -- watching the server ----------------------------------------------------------------------


def p99(latencies: list[float]) -> tuple[float, str]:
    ordered = sorted(latencies)
    value = ordered[int(len(ordered) * 0.99)]
    worst = ordered[-1]
    return value, f"p99 {value * 1000:.0f} ms, worst {worst * 1000:.0f} ms of {len(ordered)}"


def assert_answering(latencies: list[float]) -> None:
    """The probes' 99th percentile within PROBE_LIMIT_S and the worst within a second, over
    enough probes for a percentile to mean something (as test_e2e_attacks bounds them: a
    2-core machine shared with the test schedules the probe late now and then)."""
    value, shown = p99(latencies)
    assert len(latencies) > 50 and value < PROBE_LIMIT_S and max(latencies) < 1.0, shown


async def post_all(url: str, requests: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return list(await asyncio.gather(*(client.post(path, **kw) for path, kw in requests)))


def rounds(url: str, requests: list[tuple[str, dict[str, Any]]], seconds: float) -> list[Any]:
    """The requests all at once, again and again for at least `seconds` (so the probes
    watching have a few hundred samples); every answer."""
    answers: list[httpx.Response] = []
    deadline = time.monotonic() + seconds
    while not answers or time.monotonic() < deadline:
        answers += asyncio.run(post_all(url, requests))
    return answers


def demo(serve: Callable[..., Server]) -> Server:
    return serve(
        bundle=DEMO,
        max_body_bytes=32 * MiB,
        body_memory_bytes=BODY_MEMORY,
        decode_memory_bytes=DECODE_MEMORY,
        max_image_bytes=128 * MiB,
        request_timeout_s=120,
    )


# -- the tests --------------------------------------------------------------------------------


def test_malformed_v2_bodies_get_a_precise_4xx_and_a_small_error(
    serve: Callable[..., Server],
) -> None:
    server = demo(serve)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for what, body, headers, status, phrase in malformed():
            answer = client.post(INFER, content=body, headers=headers)
            assert answer.status_code == status, (what, answer.text[:500])
            assert len(answer.content) <= MAX_ERROR_BYTES, (what, len(answer.content))
            assert phrase in answer.json()["error"], (what, answer.json())
        good = client.post(INFER, json={"inputs": [image_input(hostile.jpeg())]})
        assert good.status_code == 200
    assert "Traceback" not in server.output()


def test_documents_are_counted_before_they_are_built_and_the_loop_keeps_answering(
    serve: Callable[..., Server],
) -> None:
    server = demo(serve)
    attacks = counted() * 3  # three of each at once
    requests = [(INFER, {"content": body}) for _, body, _ in attacks]
    with probing(server.url) as latencies:
        started = time.monotonic()
        answers = asyncio.run(post_all(server.url, requests))
        took = time.monotonic() - started
        rounds(server.url, requests, seconds=5)
    for (what, _, phrase), answer in zip(attacks, answers, strict=True):
        assert answer.status_code == 413 and phrase in answer.json()["error"], (what, answer.text)
        assert len(answer.content) <= MAX_ERROR_BYTES
    assert took < 30, f"{len(attacks)} counted refusals took {took:.1f} s"  # unguarded: 109 s
    assert_answering(latencies)  # unguarded: 7 of 26 probes timed out (10 s)
    assert "Traceback" not in server.output()


def test_gzip_bodies_count_what_they_inflate_to_against_the_body_budget(
    serve: Callable[..., Server],
) -> None:
    server = demo(serve)
    bomb = gzip_bomb()
    assert len(bomb) < 40_000
    pids = list(instance_pids(server.url).values())  # the supervisor, the engine and the front
    baseline = rss(pids)
    requests = [(INFER, {"content": bomb, "headers": {"Content-Encoding": "gzip"}})] * 24
    with peak_rss(pids) as peak, probing(server.url) as latencies:
        statuses = [a.status_code for a in rounds(server.url, requests, seconds=6)]
    # The budget holds three at once (30 MB inflated and its 22.5 MB image, each, of 160 MiB):
    # the rest wait their turn as 429s (unguarded, all 24 were admitted).
    assert set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses, statuses
    # The README's ceiling for these budgets (as test_e2e_attacks holds every attack to);
    # unguarded: +1.1 GiB (the bodies: +2.0 GiB).
    ceiling = baseline + DECODE_MEMORY + BODY_MEMORY + SLACK
    assert peak[0] < ceiling, f"peak RSS +{(peak[0] - baseline) / MiB:.0f} MiB over the baseline"
    assert_answering(latencies)  # unguarded: p99 1.2 s (the issue's: 3.5–4.1 s)
    deadline = time.monotonic() + 30
    while rss(pids) > baseline + SLACK and time.monotonic() < deadline:
        time.sleep(0.2)  # the last answers' buffers are freed as their connections close
    held = rss(pids) - baseline
    assert held <= SLACK, f"+{held / MiB:.0f} MiB still held after the attack"


def test_image_headers_are_priced_before_pillow_walks_them(serve: Callable[..., Server]) -> None:
    server = demo(serve)
    tags, _ = multipart([hostile.tiff(8, 8, extra_tags=65_526)] * 40)  # 65,535: an IFD's most
    exif, _ = multipart([hostile.exif_jpeg(5_400)] * 64)
    strips = hostile.tiff(1, 4_000_000, 1)  # 28 MB: 16–17 s and +1.3 GB when walked
    kind = {"Content-Type": "multipart/form-data; boundary=b0"}
    attacks = [
        ("/classify", {"content": tags, "headers": kind}),
        ("/classify", {"content": tags, "headers": kind}),
        ("/classify", {"content": exif, "headers": kind}),
        ("/classify", {"content": exif, "headers": kind}),
        ("/classify", {"content": strips, "headers": {"Content-Type": "image/tiff"}}),
    ]
    with probing(server.url) as latencies:
        started = time.monotonic()
        answers = asyncio.run(post_all(server.url, attacks))
        took = time.monotonic() - started
        answers += rounds(server.url, attacks, seconds=5)
    for answer in answers:
        error = answer.json()["error"]
        assert (answer.status_code, error["code"]) == (413, "image_too_large"), error
        assert "too costly to parse" in error["message"]
    assert took < 20, f"refusing them took {took:.1f} s"  # unguarded: 28 + 5 + 30 s
    assert_answering(latencies)
    files, _ = multipart([camera_jpeg(), strips_tiff(), hostile.tiff(300, 200, 1)])
    real = httpx.post(f"{server.url}/classify", content=files, headers=kind, timeout=60)
    assert real.status_code == 200, real.text
    assert len(real.json()["results"]) == 3
    assert "Traceback" not in server.output()
