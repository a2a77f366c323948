"""The project's modules and the imports between them, read from the source (every import
statement counts: top-level, inside functions, and under `if TYPE_CHECKING`)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("vit_core", "service", "model_export")


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. service.edge.deps
    path: Path
    tree: ast.Module

    @property
    def package(self) -> str:
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]


def modules() -> dict[str, Module]:
    found = {}
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = Module(name, path, ast.parse(path.read_text(), str(path)))
    return found


def imported(module: Module, known: dict[str, Module]) -> Iterator[tuple[str, ast.stmt]]:
    """(project module, statement) for every import of a project module in `module`. `from
    package import name` imports package.name when that is a module (the package's __init__ has
    run already when a submodule of it imports a sibling), else the package itself."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, node
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            if base is None:
                continue
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            yield from ((sub, node) for sub in submodules)
            if base in known and len(submodules) < len(node.names):  # names from base itself
                yield base, node


def _absolute(node: ast.ImportFrom, module: Module) -> str | None:
    if node.level == 0:
        return node.module
    package = module.package.split(".")
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {target for target, _ in imported(m, known) if target != name}
        for name, m in known.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found
