"""The CPU serving image, run the way docker-compose.yml runs its `api-cpu` service: read-only
root, tmpfs /tmp, the image's non-root user, compose's environment; published on 127.0.0.1 only.

One container for the module, stopped by the last test with SIGTERM. `make test-image` builds the
image and runs this file; elsewhere it skips.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from container import (
    ENGINE,
    IMAGE,
    Container,
    compose_flags,
    engine,
    needs_image,
    remove,
    start,
)
from deployfiles import ROOT, Stage, exec_form
from net import free_port, sample, wait_for

pytestmark = needs_image
EXAMPLES = ROOT / "examples"
# Batches of up to 8 images; a batch waits up to 1 s only for images still being decoded.
BATCHING = {"VIT_MAX_BATCH_SIZE": "8", "VIT_MAX_WAIT_MS": "1000"}


@pytest.fixture(scope="module")
def api(compose: dict[str, Any]) -> Iterator[Container]:
    container = start(compose_flags(compose["services"]["api-cpu"], **BATCHING), free_port())
    yield container
    remove(container)


def classify(url: str, *names: str) -> httpx.Response:
    files = [("file", (name, (EXAMPLES / name).read_bytes())) for name in names]
    return httpx.post(f"{url}/classify", files=files, params={"top_k": 1}, timeout=60)


def test_runs_as_the_image_user_on_a_read_only_root(
    api: Container, stages: dict[str, Stage]
) -> None:
    uid = stages["serve"].args("USER")[-1].partition(":")[0]
    assert api.exec("id", "-u").stdout.strip() == uid
    assert api.exec("touch", "/app/probe").returncode != 0, "the root file system is read-only"
    write_home = "import os, pathlib; (pathlib.Path(os.environ['HOME']) / 'probe').write_text('x')"
    assert api.exec("python", "-c", write_home).returncode == 0, "HOME is writable"


def test_classifies_the_example_images(api: Container) -> None:
    answer = classify(api.url, "star.jpg", "hexagon.png", "circle.png")
    assert answer.status_code == 200, answer.text
    labels = [r["predictions"][0]["label"] for r in answer.json()["results"]]
    assert labels == ["star", "hexagon", "circle"]


def test_a_broken_image_is_a_400_naming_it(api: Container) -> None:
    answer = classify(api.url, "truncated.jpg")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_image"


def test_the_image_keeps_its_healthcheck_and_it_passes(
    api: Container, stages: dict[str, Stage]
) -> None:
    """The built image still carries the Dockerfile's HEALTHCHECK (the OCI format drops it), and
    the check passes inside the running container."""
    (healthcheck,) = stages["serve"].args("HEALTHCHECK")
    inspected = engine("image", "inspect", "--format", "{{json .Config.Healthcheck}}", IMAGE)
    test = json.loads(inspected.stdout)["Test"]
    assert test == ["CMD", *exec_form(healthcheck)]
    assert api.exec(*test[1:]).returncode == 0
    if ENGINE == "podman":  # podman runs it on demand; docker on its own 10 s timer
        assert engine("healthcheck", "run", api.name, check=False).returncode == 0
    else:
        wait_for(lambda: api.state(".State.Health.Status") == "healthy", "healthy", 60)


def test_starts_without_warnings(api: Container) -> None:
    warnings = [line for line in api.logs().splitlines() if "warn" in line.lower()]
    assert warnings == []


def test_sigterm_finishes_queued_work_then_exits_cleanly(api: Container) -> None:
    """Last: it stops the container."""
    # A lone request on an idle engine runs at once, so work stays queued only behind a busy
    # engine: three requests of 32 images (12 batches of 8) keep images waiting for a while.
    stars = ("star.jpg",) * 32
    with ThreadPoolExecutor(3) as pool:
        pending = [pool.submit(classify, api.url, *stars) for _ in range(3)]
        wait_for(lambda: sample(api.url, "vit_queue_depth", graph="fast") > 0, "images queued")
        engine("kill", "--signal=TERM", api.name)
        answers = [p.result() for p in pending]
    assert [a.status_code for a in answers] == [200, 200, 200], "nothing queued is lost"
    assert all(len(a.json()["results"]) == len(stars) for a in answers)
    exit_code = engine("wait", api.name, timeout=60).stdout.strip()
    # vit-serve is PID 1: uvicorn's re-raised SIGTERM is ignored there, so it returns 0.
    assert exit_code == "0", api.logs()
    assert "Application shutdown complete" in api.logs()
