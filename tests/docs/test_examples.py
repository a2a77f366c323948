"""Every example in README.md and docs/ that talks to the service runs here, against one live
`vit-serve` on the bundled model (models/demo, default settings, the CPU provider), and what it
prints is compared with what the page shows (doc_blocks.py: which blocks run; doc_outputs.py: how
outputs compare). A changed model or API fails here until the docs are redone.

Each block runs in a temporary folder holding a copy of examples/, so files it writes (heat.png,
embeddings.jsonl) never land in the repository. Commands are written for `make run`, at
localhost:8000; they are sent to the live server's port instead, and vit-client gets its --url.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from doc_blocks import ROOT, Block, all_blocks, commands, printed, unaccounted
from doc_outputs import mismatches
from e2e.live import START_TIMEOUT, Server, ready
from net import free_port, wait_for

BUNDLE = ROOT / "models" / "demo"
DOCS_ADDRESSES = ("localhost:8000", "127.0.0.1:8000")
COMMAND_TIMEOUT = 60  # seconds; one example's command, on a busy machine
RUNNABLE = [b for b in all_blocks() if b.runs]


@dataclass(frozen=True)
class Shell:
    """Where and how an example's commands run: the live address, and an environment like a
    user's terminal after `make run` (the project's .venv on PATH)."""

    address: str  # 127.0.0.1:PORT
    env: dict[str, str]

    def live(self, text: str) -> str:
        for written in DOCS_ADDRESSES:
            text = text.replace(written, self.address)
        return text

    def run(self, argv: list[str], cwd: Path) -> tuple[int, str]:
        done = subprocess.run(
            argv, cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=COMMAND_TIMEOUT, check=False,
        )  # fmt: skip
        return done.returncode, done.stdout.decode(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    log = tmp_path_factory.mktemp("vit-serve") / "log"
    command = [sys.executable, "-m", "service.cli", f"--bundle={BUNDLE}", f"--port={port}"]
    command += ["--providers=cpu", "--log-level=warning", "--drain-delay-s=0"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VIT_")}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for(
            lambda: process.poll() is not None or ready(server.url), "vit-serve", START_TIMEOUT
        )
        assert process.poll() is None, f"vit-serve exited:\n{server.output()}"
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def shell(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Shell:
    home = tmp_path_factory.mktemp("shell")
    # A terminal shows no progress meter for `curl URL`, but curl prints one on stderr whenever
    # its output is not a terminal, as here: silent, errors still shown, as a user sees it.
    (home / ".curlrc").write_text("silent\nshow-error\n")
    # vit-client's address is its --url (default 127.0.0.1:8000); a later --url wins.
    client = home / "vit-client"
    client.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vit_client "$@" --url {server.url}\n')
    client.chmod(0o755)
    path = os.pathsep.join([str(home), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIT_")}
    env.update(
        PATH=path, CURL_HOME=str(home), PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8",
        PYTHONPATH=os.pathsep.join([str(ROOT / "client"), str(ROOT)]),
    )  # fmt: skip
    return Shell(server.url.removeprefix("http://"), env)


def test_every_example_that_talks_to_the_service_runs() -> None:
    problems = [f"{b.where}: {why}" for b in all_blocks() if (why := unaccounted(b))]
    assert not problems, "\n".join(problems)
    assert len(RUNNABLE) >= 10, "the README and docs lost their examples"


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.where for b in RUNNABLE])
def test_example_shows_what_the_service_answers(block: Block, shell: Shell, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    if block.lang == "python":
        (tmp_path / "example.py").write_text(shell.live(block.text))
        code, output = shell.run([sys.executable, "example.py"], tmp_path)
        assert code == 0, f"{block.where} failed:\n{output}"
        problems = mismatches(printed(block), output)
        assert not problems, _report(block, block.text, printed(block), problems, output)
        return
    if "curl " in block.text and shutil.which("curl") is None:
        pytest.skip(
            "curl is not installed: the curl examples need a real curl (apt-get install curl)"
        )
    steps = commands(block)
    assert steps, f"{block.where}: a console block with no `$ ` command"
    for step in steps:
        code, output = shell.run(["bash", "-c", shell.live(step.command)], tmp_path)
        problems = mismatches(step.shown, output)
        if not step.shown and code:
            problems.append(f"exit code {code}")
        assert not problems, _report(block, step.command, step.shown, problems, output)


def _report(block: Block, command: str, shown: list[str], problems: list[str], output: str) -> str:
    return "\n".join(
        [f"{block.where}: the example no longer shows what the service answers", f"$ {command}"]
        + [f"  {p}" for p in problems]
        + ["shown:", *shown, "printed:", output]
    )
