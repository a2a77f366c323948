"""The torch side's console scripts, as pip installs them: with torch they run; without it (a
`make run` install, the service alone) each says in one line which install gives it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(("script", "function"), [
    ("vit-train", "train"), ("vit-export", "export"), ("vit-inspect", "inspect"),
])  # fmt: skip
def test_without_torch_one_line_names_the_install(script: str, function: str) -> None:
    hide_torch = "import sys; sys.modules['torch'] = None  # what `import torch` finds: nothing\n"
    code = f"{hide_torch}from model_export.commands import {function}; sys.exit({function}())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"{script}: needs PyTorch") and "'.[cpu,export]'" in line


@pytest.mark.parametrize("script", ["vit-train", "vit-export", "vit-inspect"])
def test_with_torch_the_installed_script_runs(script: str) -> None:
    done = subprocess.run([BIN / script, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
