"""The overload run: requests at a fixed rate, whatever the answers do (an open loop).

The service should answer what it cannot take with fast 429s; the naive server queues without
bound. httpx here, not bench/rawload.py: an open loop needs a connection per request in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import numpy as np

JPEG = {"Content-Type": "image/jpeg"}


@dataclass
class Overload:
    offered_per_s: float
    sent: int
    ok: int
    rejected: int  # 429
    failed: int  # timeouts, resets, 5xx
    ok_p50_ms: float
    ok_p99_ms: float
    rejected_p50_ms: float
    rejected_p99_ms: float
    # The same as the server saw them (X-Total-Time-Ms: from the app receiving the request to
    # its answer). The difference is time in the kernel's queues and in this client, which
    # shares the machine's cores with the server.
    rejected_server_p50_ms: float
    rejected_server_p99_ms: float
    last_ok_ms: float  # p50 of the requests sent in the final second: is the queue growing?


async def open_loop(url: str, images: list[bytes], rate: float, seconds: float) -> Overload:
    """Requests at a fixed rate whatever the answers do (arrivals do not wait for the server)."""
    results: list[tuple[float, int, float, float]] = []  # (sent at, status, latency, in server)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(n: int, at: float) -> None:
            begin, status, server = time.perf_counter(), 0, float("nan")
            try:
                answer = await client.post(
                    "/classify", content=images[n % len(images)], headers=JPEG
                )
                status = answer.status_code
                server = float(answer.headers.get("x-total-time-ms", "nan")) / 1000
            except httpx.HTTPError:
                pass
            results.append((at, status, time.perf_counter() - begin, server))

        tasks, start = [], time.perf_counter()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(n, n / rate)))
        await asyncio.gather(*tasks)

    def pct(status: int, q: float, last: bool = False, server: bool = False) -> float:
        chosen = [
            (inside if server else lat)
            for at, s, lat, inside in results
            if s == status and (not last or at >= seconds - 1)
        ]
        return float(np.percentile(chosen, q) * 1000) if chosen else float("nan")

    count = Counter(s for _, s, _, _ in results)
    return Overload(
        offered_per_s=rate,
        sent=len(results),
        ok=count[200],
        rejected=count[429],
        failed=len(results) - count[200] - count[429],
        ok_p50_ms=pct(200, 50),
        ok_p99_ms=pct(200, 99),
        rejected_p50_ms=pct(429, 50),
        rejected_p99_ms=pct(429, 99),
        rejected_server_p50_ms=pct(429, 50, server=True),
        rejected_server_p99_ms=pct(429, 99, server=True),
        last_ok_ms=pct(200, 50, last=True),
    )


def overload_table(rows: dict[str, Overload]) -> str:
    lines = [
        "| system | offered req/s | sent | 200 | 429 | failed | 200 p50 ms | 200 p99 ms | "
        "429 p50 ms | 429 p99 ms | 429 in server p50 / p99 ms | 200 p50 ms, last second |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, o in rows.items():
        lines.append(
            f"| {name} | {o.offered_per_s:.0f} | {o.sent} | {o.ok} | {o.rejected} | {o.failed} | "
            f"{o.ok_p50_ms:.0f} | {o.ok_p99_ms:.0f} | {o.rejected_p50_ms:.1f} | "
            f"{o.rejected_p99_ms:.1f} | {o.rejected_server_p50_ms:.1f} / "
            f"{o.rejected_server_p99_ms:.1f} | {o.last_ok_ms:.0f} |"
        )
    return "\n".join(lines)
