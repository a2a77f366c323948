"""The systems the load benchmarks start on 127.0.0.1, and the bundles they serve.

    with serving({"service": service_command(bundle, port, 32), ...}) as running:
        running.urls["service"], running.pids["service"]

Every server is up and past /readyz (warm-up included) before the block runs, and gets SIGTERM
at its end. The environment's VIT_ variables are dropped, so only the command line configures.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Running:
    urls: dict[str, str]
    pids: dict[str, int]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_command(
    bundle: Path,
    port: int,
    max_batch_size: int | None,
    max_wait_ms: float | None,
    max_queue: int,
    *extra: str,
) -> list[str]:
    """vit-serve on the CPU; max_batch_size and max_wait_ms None: the defaults (the batch size
    measured and chosen at warm-up, the wait the engine's device sets)."""
    batch = [] if max_batch_size is None else [f"--max-batch-size={max_batch_size}"]
    wait = [] if max_wait_ms is None else [f"--max-wait-ms={max_wait_ms}"]
    return [
        sys.executable, "-m", "service.cli", f"--bundle={bundle}", f"--port={port}",
        "--providers=cpu", *batch, *wait,
        f"--max-queue-images={max_queue}", "--log-level=warning", *extra,
    ]  # fmt: skip


def naive_command(bundle: Path, port: int) -> list[str]:
    script = ROOT / "bench" / "naive_server.py"
    return [sys.executable, str(script), f"--bundle={bundle}", f"--port={port}"]


def litserve_command(
    python: str, bundle: Path, port: int, max_batch_size: int, max_wait_ms: float
) -> list[str]:
    """bench/litserve_server.py under `python`, an interpreter that has LitServe."""
    script = ROOT / "bench" / "litserve_server.py"
    return [
        python, str(script), f"--bundle={bundle}", f"--port={port}",
        f"--max-batch-size={max_batch_size}", f"--batch-timeout={max_wait_ms / 1000}",
    ]  # fmt: skip


def port_of(command: list[str]) -> int:
    return int(next(a for a in command if a.startswith("--port=")).split("=")[1])


@contextmanager
def serving(commands: Mapping[str, list[str]], timeout: float = 1800) -> Iterator[Running]:
    """Every command started and ready; SIGTERM for all at the end, then SIGKILL for whatever
    each left behind in its process group (LitServe's workers outlive their parent's SIGTERM and
    kept polling: 15 % of a core under the next benchmarks)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIT_")}
    processes = {
        name: subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
        for name, cmd in commands.items()
    }
    urls = {name: f"http://127.0.0.1:{port_of(cmd)}" for name, cmd in commands.items()}
    try:
        deadline = time.monotonic() + timeout
        for name, url in urls.items():
            while not _ready(url):
                if processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited with {processes[name].returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready after {timeout:.0f} s")
                time.sleep(0.5)
        yield Running(urls, {name: p.pid for name, p in processes.items()})
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


# The last revision before this round of work (one process per worker, the full JPEG decode by
# default, batches of 32): what "today's default" means in the benchmarks that compare with it.
BASELINE = "dbd8fd1"


@contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """The repository at `rev`, checked out beside this one for the length of the block."""
    folder = Path(tempfile.mkdtemp(prefix="vit-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), rev], cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, check=True)


def baseline_bundle(checkout: Path, maker: str) -> Path:
    """The bundle `maker()` (featherweight, vit_ti16) makes, as the checkout's own exporter writes
    it (a manifest schema it reads), cached apart from this checkout's own."""
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    home = Path(tempfile.gettempdir()) / f"vit-baseline-{rev}"
    home.mkdir(exist_ok=True)
    code = f"import sys; sys.path.insert(0, {str(checkout)!r}); from bench.servers import {maker}; "
    made = subprocess.run([sys.executable, "-c", code + f"print({maker}())"], cwd=checkout,
                          env={**os.environ, "TMPDIR": str(home)}, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return Path(made.stdout.strip().splitlines()[-1])


def baseline_command(checkout: Path, command: list[str]) -> list[str]:
    """`command` (a service_command) run from another checkout: its packages first on the path
    (ahead of "", the working directory, which `python -c` puts first: this checkout)."""
    start = f"import sys; sys.path.insert(0, {str(checkout)!r}); from service.cli import main; "
    return [command[0], "-c", start + "sys.exit(main())", *command[3:]]


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def cached_bundle(name: str, **config: object) -> Path:
    """A random-weight ViT of `config` (ViTConfig fields, or a preset=...) exported once into the
    temp dir; the timing does not depend on the weights."""
    cached = Path(tempfile.gettempdir()) / f"vit-bench-{name}"
    if not (cached / "model.json").is_file():
        import torch

        from model_export.export.exporter import export_bundle
        from model_export.model.presets import preset
        from model_export.model.vit import ViT, ViTConfig

        print(f"exporting a random {name} to {cached} (once)", flush=True)
        torch.manual_seed(0)
        name_of_preset = config.pop("preset", None)
        vit = preset(str(name_of_preset)) if name_of_preset else ViTConfig(**config)  # type: ignore[arg-type]
        export_bundle(ViT(vit), cached, name=name, version="1",
                      source_sha256="0" * 64, allow_untrained_head=True, force=True)  # fmt: skip
    return cached


def vit_ti16() -> Path:
    """The issue's reference model: a random ViT-Ti/16 at 224 px, 1000 classes."""
    return cached_bundle("ti16-224", preset="vit-ti16")


def featherweight() -> Path:
    """A model that costs almost nothing (1 block, D=32, 224 px): what is left is the front end."""
    return cached_bundle("1block-d32-224", dim=32, depth=1, heads=2, mlp_dim=64, num_classes=10)
