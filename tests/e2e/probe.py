"""`python probe.py URL`: GET URL every 20 ms on one kept-alive connection until standard input
closes, then print the latencies (seconds) as JSON. A process of its own, so the test's own work
(sending the attacks) cannot delay the probe and be blamed on the server."""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx


def main(url: str) -> None:
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    latencies = []
    with httpx.Client(timeout=10) as client:
        client.get(url)  # connect first: only answers are timed
        print("ready", flush=True)
        while not closed.wait(0.02):
            started = time.perf_counter()
            if client.get(url).status_code != 200:
                latencies.append(float("inf"))
                continue
            latencies.append(time.perf_counter() - started)
    print(json.dumps(latencies), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
