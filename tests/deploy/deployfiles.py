"""Readers for the deployment files: the Dockerfile's stages, .dockerignore, YAML."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    """One FROM ... AS name block of the Dockerfile: its instructions as (KEYWORD, arguments)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        """ENV KEY=value pairs (the only form the Dockerfile uses)."""
        pairs = (pair.partition("=") for args in self.args("ENV") for pair in shlex.split(args))
        return {key: value for key, _, value in pairs}


def dockerfile_stages(path: Path = ROOT / "Dockerfile") -> dict[str, Stage]:
    """Instructions per stage, in order; "" holds the global ARGs before the first FROM.

    Line continuations are joined; comments and parser directives dropped.
    """
    text = path.read_text().replace("\\\n", " ")
    stages = {"": Stage("", "")}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), " ".join(args.split())
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?: as (\S+))?", args, re.IGNORECASE)
            assert match, f"unreadable FROM {args}"
            stages[match[2] or ""] = Stage(match[2] or "", match[1])
        else:
            list(stages.values())[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction (CMD, ENTRYPOINT, HEALTHCHECK ... CMD)."""
    return list(json.loads(args[args.index("[") :]))


def load_yaml(relative: str) -> Any:
    return yaml.safe_load((ROOT / relative).read_text())


def lock_module() -> ModuleType:
    """docker/lock.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("lock", ROOT / "docker" / "lock.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps path (relative, with /) out of the build context.

    Docker's rule: the last pattern matching the path, or one of its parent folders, decides.
    """
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        # Go's filepath.Match: * and ? stop at "/"; **/ spans any number of folders.
        regex = "".join(
            {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(tok, re.escape(tok))
            for tok in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", glob)
        )
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


PIN = re.compile(r"^([a-z0-9-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", re.MULTILINE)


def lock_pins(flavor: str) -> dict[str, tuple[str, str]]:
    """docker/requirements-<flavor>.txt as name -> (version, sha256), after checking that every
    requirement in it is a hash-pinned pin."""
    text = (ROOT / "docker" / f"requirements-{flavor}.txt").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    found = PIN.findall(text)
    assert len(found) == body.count("=="), "every requirement is name==version with one sha256"
    return {name: (version, sha) for name, version, sha in found}


# The GPU architectures ONNX Runtime's CUDA kernels in the gpu lock are built for: the cubins
# `cuobjdump --list-elf` lists in libonnxruntime_providers_cuda.so (no PTX, so nothing is
# JIT-compiled for newer GPUs). test_container_gpu.py re-measures it from the built image.
CUDA_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90a", "sm_120a")


def cuda_kernels_run_on(compute: tuple[int, int], archs: tuple[str, ...] = CUDA_ARCHS) -> bool:
    """CUDA's binary compatibility: an sm_XY cubin runs on compute X.Z for Z >= Y; an
    architecture-specific sm_XYa cubin only on X.Y itself."""
    for arch in archs:
        digits = arch.removeprefix("sm_").removesuffix("a")
        major, minor = int(digits[:-1]), int(digits[-1])
        if arch.endswith("a"):
            if compute == (major, minor):
                return True
        elif compute[0] == major and compute[1] >= minor:
            return True
    return False
