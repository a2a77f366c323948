"""The attacks of the hostile-input review, fired at a real `vit-serve` all at once: every one is
refused or answered (never a 5xx), the event loop keeps answering probes, the process stays under
its stated memory ceiling and gives the memory back afterwards."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import hostile
import httpx
from live import Server, instance_pids

MiB = 1 << 20
DECODE_MEMORY, BODY_MEMORY = 256 * MiB, 160 * MiB
SLACK = 160 * MiB  # interpreter, ORT arenas, sockets, allocator rounding: measured ~60–100 MiB
# What may stay once every answer is out: +11–37 MiB measured. +104–176 MiB before each process
# trimmed its heap when idle again (vit_core/memory.py, TrimWhenIdle), and +71–115 MiB in one run
# of three (the engine's thread arenas, whose top malloc_trim leaves) before the trim
# threshold came down to 16 MiB: the CI failed on each.
KEPT = 64 * MiB
PROBE_LIMIT_S = 0.1  # /healthz must answer within this while the attacks run (99th percentile)


def rss(pids: list[int]) -> int:
    """The resident memory of the instance: every one of its processes, added up."""
    total = 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
        total += int(kib) << 10
    return total


@contextmanager
def peak_rss(pids: list[int]) -> Iterator[list[int]]:
    """Samples the instance's resident memory every 5 ms; the list holds the peak."""
    peak, done = [rss(pids)], threading.Event()

    def watch() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss(pids))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    body = b"".join(
        b'--b0\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + part + b"\r\n"
        for part in parts
    )
    return body + b"--b0--\r\n", "multipart/form-data; boundary=b0"


def attacks() -> list[tuple[str, bytes, str]]:
    """(path, body, content type): each a small request that once cost seconds or gigabytes."""
    items = b'{"images": [' + b",".join([b"0"] * 1_000_000) + b"]}"
    empty_parts, ctype = multipart([b""] * 400_000)
    big16, _ = multipart([hostile.grey16_png(4000, 3000)] * 16)  # 12 MP, 16-bit: ~120 MiB each
    rle, _ = multipart([hostile.rle_bmp(8000, 5000)] * 8)
    photo = hostile.png(3000, 2000, rows=(b"\x00" + b"\x80" * 9000) * 2000)  # 6 MP: ~80 MiB
    as_json = b'{"images": ["' + base64.b64encode(photo) + b'"]}'
    return [
        ("/classify", items, "application/json"),
        ("/classify", empty_parts, ctype),
        ("/classify", hostile.many_markers_jpeg(2_000_000), "image/jpeg"),
        ("/classify", big16, ctype),
        ("/classify", rle, ctype),
        *[("/attention?format=png", photo, "image/png")] * 8,
        ("/embed", as_json, "application/json"),
    ]


async def fire(url: str) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        answers = await asyncio.gather(
            *(
                client.post(path, content=body, headers={"Content-Type": kind})
                for path, body, kind in attacks()
            )
        )
    return [answer.status_code for answer in answers]


@contextmanager
def probing(url: str) -> Iterator[list[float]]:
    """/healthz probed from another process (probe.py) while the block runs: the latencies."""
    command = [sys.executable, str(Path(__file__).with_name("probe.py")), f"{url}/healthz"]
    probe = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert probe.stdin is not None and probe.stdout is not None
    assert probe.stdout.readline().strip() == "ready"
    latencies: list[float] = []
    try:
        yield latencies
    finally:
        out, _ = probe.communicate(timeout=60)  # closes its stdin: it stops and reports
        latencies.extend(json.loads(out))


def test_every_attack_at_once_is_refused_cheaply_under_the_memory_ceiling(
    serve: Callable[..., Server],
) -> None:
    server = serve(
        decode_memory_bytes=DECODE_MEMORY,
        body_memory_bytes=BODY_MEMORY,
        max_image_bytes=128 * MiB,
        max_body_bytes=32 * MiB,
        request_timeout_s=120,
    )
    pids = list(instance_pids(server.url).values())  # the supervisor, the engine and the front
    baseline = rss(pids)
    before = {pid: rss([pid]) for pid in pids}
    with peak_rss(pids) as peak, probing(server.url) as latencies:
        statuses = asyncio.run(fire(server.url))
    assert all(status < 500 for status in statuses), statuses
    assert statuses.count(200) >= 8, statuses  # the heat-maps and the big 16-bit ones are served
    # The unguarded loop froze for 4–27 s. A 2-core machine shared with the attack's 4 decode
    # threads, ORT and the test itself schedules the probe late now and then: the bound is on
    # the 99th percentile, and a looser one on the worst probe.
    latencies.sort()
    p99, worst = latencies[int(len(latencies) * 0.99)], latencies[-1]
    shown = f"p99 {p99 * 1000:.0f} ms, worst {worst * 1000:.0f} ms of {len(latencies)} probes"
    assert len(latencies) > 50 and p99 < PROBE_LIMIT_S and worst < 1.0, shown
    ceiling = baseline + DECODE_MEMORY + BODY_MEMORY + SLACK
    assert peak[0] < ceiling, f"peak RSS {peak[0] / MiB:.0f} MiB > {ceiling / MiB:.0f} MiB"
    deadline = time.monotonic() + 30
    while rss(pids) > baseline + KEPT and time.monotonic() < deadline:
        time.sleep(0.2)  # the last answers' buffers are freed as their connections close
    after = rss(pids)
    each = {pid: (rss([pid]) - before[pid]) // MiB for pid in pids}  # which process kept it
    assert after <= baseline + KEPT, f"RSS stayed {(after - baseline) // MiB} MiB up: {each}"
