"""Warm-up reaches the steady state: the memory a real `vit-serve` holds when /readyz turns 200 is
what it holds after full batches on every graph, read from /proc for every process of the
instance. (Each session's memory patterns, planned again by the first thread to run a shape, once
added 720 MiB at batch 32 after readiness: the ceiling stated from /readyz undercounted.)"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from live import Server, instance_pids
from test_e2e_attacks import rss
from test_e2e_hostile_v2 import DEMO

MiB = 1 << 20
BATCH = 16
GROWTH = 48 * MiB  # the front's buffers for 16-image requests and answers, allocator rounding

pytestmark = pytest.mark.skipif(
    not (DEMO / "model.json").is_file(), reason="the demo bundle (models/demo) is not there"
)


def test_full_batches_on_every_graph_after_readiness_add_almost_nothing(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(bundle=DEMO, max_batch_size=BATCH)
    pids = list(instance_pids(server.url).values())
    ready = rss(pids)
    files = [("file", (f"{i}.jpg", draw(640, 480, seed=i), "image/jpeg")) for i in range(BATCH)]
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for path in ("/classify", "/embed", "/attention") * 2:
            assert client.post(path, files=files).status_code == 200
    grown = rss(pids) - ready
    assert grown < GROWTH, f"+{grown / MiB:.0f} MiB after readiness"
