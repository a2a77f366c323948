"""The image's Python environment, built here the way the Dockerfile builds it.

No container engine is needed: the build stage's COPY and RUN steps are replayed into a temporary
folder with the cpu lock (the gpu lock differs only in the ONNX Runtime wheel and the CUDA wheels,
gigabytes that CI should not download; test_gpu_lock_resolves_to_itself proves those pins and
hashes against the index from metadata alone). The result must import the app, hold exactly the
locked packages and no torch, and serve the demo bundle until the image's HEALTHCHECK passes.

Needs the package index; takes a minute or so.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deployfiles import ROOT, Stage, exec_form, lock_module, lock_pins
from net import free_port

pytestmark = pytest.mark.slow
FLAVOR = "cpu"


def replay_copy(args: str, src: Path) -> None:
    """COPY a b dest/ into the folder standing in for the build stage's WORKDIR."""
    *sources, dest = args.replace("${FLAVOR}", FLAVOR).split()
    for source in sources:
        origin, target = ROOT / source, src / dest
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)


def replay_run(args: str, src: Path, venv: Path) -> None:
    words = [w for w in shlex.split(args) if not w.startswith("--mount=")]
    paths = {"/opt/venv": str(venv), "/src": str(src), "${FLAVOR}": FLAVOR}
    env = {**os.environ, "PYTHON": sys.executable}  # the image's interpreter version, 3.11
    subprocess.run([paths.get(w, w) for w in words], cwd=src, env=env, check=True)


@pytest.fixture(scope="module")
def venv(stages: dict[str, Stage], tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = stages["build"]
    assert build.args("WORKDIR") == ["/src"]
    src, venv = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("image") / "venv"
    for keyword, args in build.instructions:
        if keyword == "COPY":
            replay_copy(args, src)
        elif keyword == "RUN":
            replay_run(args, src, venv)
    return venv


def image_env(stages: dict[str, Stage], venv: Path, **overrides: str) -> dict[str, str]:
    """The serving image's ENV, pointed at this venv; nothing from the outer VIT_* environment."""
    outer = {k: v for k, v in os.environ.items() if not k.startswith("VIT_")}
    env = {**outer, **stages["base"].env(), **stages["serve"].env(), **overrides}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{outer['PATH']}"
    return env


def test_environment_is_exactly_the_lock(venv: Path) -> None:
    listed = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "list", "--format=json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed)}
    expected = {name: version for name, (version, _) in lock_pins(FLAVOR).items()}
    expected["vit-service"] = installed.get("vit-service", "missing")
    del expected["setuptools"]  # build-only: install.sh removes it
    assert {name: v for name, v in installed.items() if name != "pip"} == expected


def test_environment_imports_the_app_and_has_no_torch(venv: Path) -> None:
    code = "import importlib.util, service.app; assert importlib.util.find_spec('torch') is None"
    subprocess.run([venv / "bin" / "python", "-c", code], check=True)


def test_vit_serve_help(venv: Path) -> None:
    shown = subprocess.run(
        [venv / "bin" / "vit-serve", "--help"], check=True, capture_output=True, text=True
    ).stdout
    assert "--max-batch-size" in shown and "--bundle" in shown


def test_serves_the_demo_bundle_until_healthy_then_stops_on_sigterm(
    venv: Path, stages: dict[str, Stage], tmp_path: Path
) -> None:
    (healthcheck,) = stages["serve"].args("HEALTHCHECK")
    check = exec_form(healthcheck)
    port = str(free_port())
    env = image_env(
        stages, venv, VIT_BUNDLE=str(ROOT / "models" / "demo"), VIT_HOST="127.0.0.1", VIT_PORT=port
    )
    assert subprocess.run(check, env=env, capture_output=True).returncode != 0, "nobody listens"
    log = tmp_path / "vit-serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen([venv / "bin" / "vit-serve"], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(check, env=env, capture_output=True).returncode != 0:
            assert server.poll() is None, f"vit-serve exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, "the image's HEALTHCHECK never passed"
            time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down, so the parent may see it.
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in log.read_text(), "the lifespan ran to its end"
    finally:
        server.kill()


def test_gpu_lock_resolves_to_itself() -> None:
    """pip, asked for the gpu lock's pins on the image's platform, picks exactly those wheels
    with exactly those hashes and needs nothing more: what `docker build` will verify, checked
    from the index's metadata without downloading the CUDA wheels."""
    locked = lock_pins("gpu")
    resolved = lock_module().resolve([f"{n}=={v}" for n, (v, _) in locked.items()], [])
    assert {name: (version, sha) for name, version, sha in resolved} == locked
