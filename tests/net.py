"""Talking to a server under test over HTTP on 127.0.0.1: a free port, one metric's value, and
polling until something holds. Shared by the e2e tests (a `vit-serve` process) and the deploy
tests (a container)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.servers import free_port  # one for the tests and the benchmarks

__all__ = ["free_port", "sample", "wait_for"]


def sample(url: str, name: str, **labels: str) -> float:
    """One sample's value from /metrics (0 when the series does not exist yet)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll until condition holds; fail naming `what` after timeout (a hang, not a slow box)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
