"""The torch side's console scripts: vit-train, vit-export and vit-inspect.

pip installs every script of the package, so `make run` (the service alone, no torch) puts these
on the PATH too. Each checks for torch first and, without it, says in one line which install
gives it, instead of a ModuleNotFoundError traceback; with it, the command runs as usual.
"""

from __future__ import annotations

import importlib
import sys

INSTALL = "pip install -c constraints/cpu.txt -e '.[cpu,export]' (or make test, which installs it)"


def _run(command: str, module: str) -> int:
    try:
        importlib.import_module("torch")
    except ImportError:
        print(f"{command}: needs PyTorch, which the service alone does not install: {INSTALL}",
              file=sys.stderr)  # fmt: skip
        return 2
    code: int | None = importlib.import_module(module).main()
    return code or 0


def train() -> int:
    return _run("vit-train", "model_export.training.cli")


def export() -> int:
    return _run("vit-export", "model_export.export.exporter")


def inspect() -> int:
    return _run("vit-inspect", "model_export.inspection.inspector")
