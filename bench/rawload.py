"""A lean closed-loop HTTP/1.1 load generator, and the CPU a server spends under it.

The request bytes are built once; each connection writes them, reads the status line, headers and
Content-Length body, and goes again (keep-alive). No HTTP library in the loop: the client shares
the machine's cores with the server it measures, so every microsecond it spends is one the server
does not get. The server's CPU is read from /proc/PID/stat (every thread of the process) over the
measured window only, and each thread's from /proc/PID/task/*/stat under the name the service
gives it (service/os_names.py: `decode_0`, `batcher-0`, `onnxruntime`, …).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Capacity:
    images_per_s: float
    server_cores: float  # CPU seconds the server processes used per second of the window
    client_cores: float  # the same for this load generator
    p50_ms: float
    errors: int
    latencies: list[float] = field(repr=False, default_factory=list)  # s, of the window's 200s
    window: float = 0.0  # s
    cores: dict[int, float] = field(repr=False, default_factory=dict)  # each server pid's share
    # each server pid's threads: 'name/tid' → their share (names: service/os_names.py)
    threads: dict[int, dict[str, float]] = field(repr=False, default_factory=dict)

    @property
    def per_core(self) -> float:
        return self.images_per_s / self.server_cores if self.server_cores else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, every thread of it."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of a process, keyed 'name/tid' (a thread gone by the time it
    is read is left out)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[f"{name}/{task.name}"] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def by_role(threads: Mapping[str, float]) -> dict[str, float]:
    """Per-thread figures ('name/tid') summed by what the threads do: 'decode_0/71' and
    'decode_1/72' are both 'decode', 'batcher-0/70' is 'batcher'."""
    out: dict[str, float] = defaultdict(float)
    for key, value in threads.items():
        out[re.sub(r"[-_]\d+$", "", key.rsplit("/", 1)[0])] += value
    return dict(out)


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def post(path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def _connection(
    port: int,
    requests: list[bytes],
    offset: int,
    stop: asyncio.Event,
    done: list[tuple[float, float]],
) -> int:
    """Posts until `stop`; appends each 200's finish time (with its latency) to `done`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors, k = 0, offset
    try:
        while not stop.is_set():
            begin = time.perf_counter()
            writer.write(requests[k % len(requests)])
            k += 1
            head = await reader.readuntil(b"\r\n\r\n")
            at = head.lower().find(b"content-length:")
            length = int(head[at + 15 : head.index(b"\r\n", at)]) if at >= 0 else 0
            await reader.readexactly(length)
            if head[9:12] == b"200":
                now = time.perf_counter()
                done.append((now, now - begin))
            else:
                errors += 1
    finally:
        writer.close()
    return errors


async def _measure(
    port: int, pids: list[int], requests: list[bytes], connections: int, seconds: float,
    warmup: float,
) -> Capacity:  # fmt: skip
    stop, done = asyncio.Event(), []  # (finish time, latency) per 200
    tasks = [
        asyncio.create_task(_connection(port, requests, k, stop, done)) for k in range(connections)
    ]
    await asyncio.sleep(warmup)
    begin, server0, client0 = (
        time.perf_counter(),
        {p: cpu_seconds(p) for p in pids},
        own_cpu_seconds(),
    )
    threads0 = {p: thread_cpu(p) for p in pids}
    await asyncio.sleep(seconds)
    end, server1, client1 = (
        time.perf_counter(),
        {p: cpu_seconds(p) for p in pids},
        own_cpu_seconds(),
    )
    threads1 = {p: thread_cpu(p) for p in pids}
    stop.set()
    errors = sum(await asyncio.gather(*tasks))
    window = end - begin
    latencies = sorted(lat for t, lat in done if begin <= t <= end)
    return Capacity(
        images_per_s=len(latencies) / window,
        server_cores=sum(server1[p] - server0[p] for p in pids) / window,
        client_cores=(client1 - client0) / window,
        p50_ms=latencies[len(latencies) // 2] * 1000 if latencies else float("nan"),
        errors=errors,
        latencies=latencies,
        window=window,
        cores={p: (server1[p] - server0[p]) / window for p in pids},
        threads={
            p: {k: (s - threads0[p].get(k, 0.0)) / window for k, s in threads1[p].items()}
            for p in pids
        },
    )


def measure(
    port: int, pids: list[int], requests: list[bytes], connections: int, seconds: float,
    warmup: float = 2.0,
) -> Capacity:  # fmt: skip
    """Closed loop: `connections` keep-alive connections, each posting as soon as answered."""
    return asyncio.run(_measure(port, pids, requests, connections, seconds, warmup))
