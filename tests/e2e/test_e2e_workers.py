"""`vit-serve --workers 2`: two HTTP fronts before one engine, seen from outside as one instance:
every scrape sums both, /readyz answers for both, and SIGTERM drains both."""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from live import Server
from prometheus_client.parser import text_string_to_metric_families

JPEG = {"Content-Type": "image/jpeg"}


def fresh(url: str, path: str, **kwargs: object) -> httpx.Response:
    """One request on a connection of its own: the kernel may hand it to either worker."""
    with httpx.Client(timeout=60) as client:
        if "content" in kwargs:
            return client.post(f"{url}{path}", **kwargs)  # type: ignore[arg-type]
        return client.get(f"{url}{path}")


def model_info_pids(url: str) -> set[str]:
    text = fresh(url, "/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return {s.labels["pid"] for s in families["vit_model_info"].samples}


def test_two_workers_answer_on_one_port_and_every_scrape_counts_both(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir="/tmp"))  # short: a socket lives there
    server = serve(workers=2, env={"TMPDIR": str(scratch)})
    assert len(model_info_pids(server.url)) == 2  # both workers' samples in one scrape
    answers = [
        fresh(server.url, "/classify", content=draw(seed=s), headers=JPEG) for s in range(12)
    ]
    assert [a.status_code for a in answers] == [200] * 12
    for _ in range(4):  # whichever worker answers the scrape, the count is the instance's
        assert server.sample("vit_images_total", endpoint="/classify") == 12
    assert len(list(scratch.glob("vit-instance-*/metrics"))) == 1
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0
    assert list(scratch.glob("vit-instance-*")) == []  # the folder does not outlive the instance
    shutil.rmtree(scratch)


def test_sigterm_drains_every_worker(
    serve: Callable[..., Server], draw: Callable[..., bytes]
) -> None:
    server = serve(workers=2, drain_delay_s=3)
    assert fresh(server.url, "/readyz").status_code == 200
    server.process.send_signal(signal.SIGTERM)
    # During the delay the listener stays open: probes on new connections (either worker) say
    # 503, and work still arriving is answered.
    assert [fresh(server.url, "/readyz").status_code for _ in range(6)] == [503] * 6
    assert fresh(server.url, "/classify", content=draw(), headers=JPEG).status_code == 200
    assert server.process.wait(60) == 0  # returns only once both workers have drained
    with pytest.raises(httpx.ConnectError):
        fresh(server.url, "/readyz")
