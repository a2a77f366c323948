"""Running a built image under the container engine that `make test-image` picked.

tests/deploy/image/run.sh builds the image and names it and the engine in IMAGE_UNDER_TEST and
IMAGE_ENGINE; without them the container tests skip (a plain `make test` has no image).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

ENGINE = os.environ.get("IMAGE_ENGINE", "")
IMAGE = os.environ.get("IMAGE_UNDER_TEST", "")
needs_image = pytest.mark.skipif(
    not (ENGINE and IMAGE), reason="runs against a built image: make test-image[-gpu]"
)
READY_TIMEOUT = 180.0  # seconds: start, load and warm up on a busy 2-core machine


def engine(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`ENGINE args...`, its output captured; a failure shows what the engine said."""
    done = subprocess.run([ENGINE, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        pytest.fail(f"{ENGINE} {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def compose_flags(service: dict[str, Any], **extra_env: str) -> list[str]:
    """`run` flags for what a compose service sets: read-only root, tmpfs, its environment.

    Variables compose leaves unset (no value: pass-through from the shell) are left out, as
    compose leaves them out when the shell has none.
    """
    flags = ["--read-only"] if service.get("read_only") else []
    flags += [f"--tmpfs={path}" for path in service.get("tmpfs", [])]
    env = {k: str(v) for k, v in service["environment"].items() if v is not None}
    env.pop("VIT_BUNDLE")  # compose mounts the bundle there; the image's own is the same model
    for key, value in {**env, **extra_env}.items():
        flags += ["-e", f"{key}={value}"]
    return flags


@dataclass
class Container:
    name: str
    url: str

    def logs(self) -> str:
        done = engine("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return engine("exec", self.name, *command, check=False)

    def state(self, field: str) -> str:
        return engine("inspect", "--format", "{{" + field + "}}", self.name).stdout.strip()


def start(flags: list[str], port: int) -> Container:
    """`run -d` the image with only 127.0.0.1:port published; wait until /readyz says 200."""
    name = f"vit-test-{uuid.uuid4().hex[:8]}"
    engine("run", "-d", f"--name={name}", f"--publish=127.0.0.1:{port}:8000", *flags, IMAGE)
    container = Container(name, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while not _ready(container.url):
            if container.state(".State.Running") != "true":
                pytest.fail(f"the container exited before /readyz:\n{container.logs()}")
            assert time.monotonic() < deadline, f"never ready:\n{container.logs()}"
            time.sleep(0.5)
    except BaseException:  # the caller's teardown never runs for a container it never got
        remove(container)
        raise
    return container


def remove(container: Container) -> None:
    engine("rm", "--force", container.name, check=False)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
