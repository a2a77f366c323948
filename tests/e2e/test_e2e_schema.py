"""Schemathesis against a real `vit-serve`: every route of the served /openapi.json, driven with
generated requests (schema-valid and not, boundary values, methods the path does not take) whose
image bodies are the fuzz corpus, intact and mutated (tests/fuzz/schema_hooks.py). Every answer
must be no 5xx, a status the schema documents, the declared content type, a body and headers
that match the schema, and 405 with Allow for an undeclared method.

It runs `schemathesis run` with tests/fuzz/schemathesis.toml, the command a user points at a
deployment, so a failure prints the request to replay with curl. Bounded and reproducible:
deterministic generation and a fixed number of examples per operation, both following the
Hypothesis profile (tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from hosted import local_app
from hypothesis import settings
from live import Server, ready, serve_in_thread, wait_for

from service.inference.engine import Engine, Outputs
from service.settings import Settings
from vit_core.bundle import load_bundle

TESTS = Path(__file__).resolve().parents[1]  # where the hooks module's package `fuzz` lives
CONFIG = TESTS / "fuzz" / "schemathesis.toml"  # phases, checks, hooks: the run but its size
KEY = "schema-run-key"
PROFILE = settings.default
EXAMPLES = max(50, PROFILE.max_examples // 20)  # per operation: 100 in ci, 2500 in long
GUARDED = {  # everything but the probes, /metrics, the page and (with their own test) the docs
    "/classify", "/embed", "/attention", "/model", "/v2", "/v2/models/{name}",
    "/v2/models/{name}/versions/{version}", "/v2/models/{name}/ready",
    "/v2/models/{name}/versions/{version}/ready", "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}/infer",
}  # fmt: skip


def schemathesis_run(url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """`schemathesis run` over every operation: the coverage phase (boundary values, undeclared
    methods), then EXAMPLES generated requests per operation."""
    command = [
        sys.executable, "-m", "schemathesis.cli", f"--config-file={CONFIG}", "--no-color",
        "run", f"{url}/openapi.json", f"--max-examples={EXAMPLES}",
        *(["--generation-deterministic"] if PROFILE.derandomize else []),
        *flags,
    ]  # fmt: skip
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    # The timeout only turns a hang into a failure; a run takes well under a minute.
    return subprocess.run(
        command, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def test_every_route_answers_within_its_schema(serve: Callable[..., Server]) -> None:
    server = serve(max_images_per_request=4)
    run = schemathesis_run(server.url)
    assert run.returncode == 0, run.stdout + run.stderr
    # The image bodies reached the decoder (refusals) and the model (answers), not only the door.
    for endpoint in ("/classify", "/embed", "/attention"):
        assert server.sample("vit_requests_total", endpoint=endpoint, status="200") > 0
    assert server.sample("vit_rejections_total", reason="invalid_image") > 0


def test_with_an_api_key_only_probes_answer_without_it(serve: Callable[..., Server]) -> None:
    """With the key every route keeps its schema; schemathesis's ignored_auth check also repeats
    successful requests without the key and with a wrong one, and those must be refused."""
    server = serve(max_images_per_request=4, api_key=KEY)
    bearer = f"Bearer {KEY}"
    schema = httpx.get(f"{server.url}/openapi.json", headers={"Authorization": bearer})
    secured = {
        p for p, ops in schema.json()["paths"].items() for op in ops.values() if "security" in op
    }
    assert secured == GUARDED  # else ignored_auth would pass without checking anything
    run = schemathesis_run(server.url, f"--header=Authorization: {bearer}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert server.sample("vit_rejections_total", reason="unauthorized") > 0


class Broken(Engine):
    """Answers warm-up (all-zero pixels) and fails every real image: a 500 on every success."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, load_bundle(folder), "cpu")

    def run(self, graph: str, pixels: np.ndarray, lane: int = 0, alone: bool = True) -> Outputs:
        if pixels.any():
            raise RuntimeError("a bug")
        return super().run(graph, pixels, lane, alone)


def test_the_run_fails_on_a_server_error(tiny_bundle: Path) -> None:
    """The harness itself: a service that answers 500 does not pass."""
    settings = Settings(bundle=tiny_bundle, max_images_per_request=4)
    with local_app(settings, Broken(tiny_bundle)) as app, serve_in_thread(app) as url:
        wait_for(lambda: ready(url), "warm-up")
        run = schemathesis_run(url)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Server error" in run.stdout
