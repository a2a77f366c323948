"""The house's rules, read from its source: the shared core loads no framework, no import loops
(lazy and type-only imports count), the halves meet only in the core, inference knows no HTTP, no
module reaches into another's private names, and every folder of source ships in the wheel."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib

from imports import PACKAGES, ROOT, cycles, graph, imported, modules
from setuptools import find_packages

FRAMEWORKS = ("starlette", "fastapi", "uvicorn", "torch", "service", "model_export")


def test_the_core_loads_no_web_framework_and_no_torch() -> None:
    code = (
        "import sys, vit_core\n"
        "from vit_core import attention, bundle, errors, image_costs, images, memory\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert loaded == "[]"


def test_no_module_imports_itself_back_through_others() -> None:
    assert cycles(graph()) == []


def test_the_halves_meet_only_in_the_core() -> None:
    allowed = {  # package → the project packages it may import
        "vit_core": {"vit_core"},
        "service": {"service", "vit_core"},
        "model_export": {"model_export", "vit_core"},
    }
    crossings = [
        f"{name} imports {target}"
        for name, targets in graph().items()
        for target in targets
        if target.split(".")[0] not in allowed[name.split(".")[0]]
    ]
    assert crossings == []


def test_inference_and_the_channel_know_no_http() -> None:
    """Data flows one way (docs/design.md): the pipeline, the batcher, the engine and the
    channel never import the edge, a route, the v2 shapes, the app or a web framework."""
    below = ("service.inference", "service.channel")
    above = ("service.edge", "service.routes", "service.v2", "service.app", "service.front")
    web = ("starlette", "fastapi", "uvicorn", "httptools", "h11")
    found = []
    for name, module in modules().items():
        if not name.startswith(below):
            continue
        found += [f"{name} imports {t}" for t in graph()[name] if t.startswith(above)]
        for node in ast.walk(module.tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found += [f"{name} imports {n}" for n in names if n.split(".")[0] in web]
    assert found == []


def test_every_folder_of_source_ships_in_the_wheel() -> None:
    """setuptools packages only folders with an __init__.py: one without (service/channel once)
    works from the checkout and is missing from the installed image."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = {ROOT.joinpath(*p.split(".")) for p in find_packages(str(ROOT), include=include)}
    folders = {path.parent for top in PACKAGES for path in (ROOT / top).rglob("*.py")}
    assert sorted(str(f.relative_to(ROOT)) for f in folders - shipped) == []


def test_no_module_uses_another_modules_private_names() -> None:
    known = modules()
    found = []
    for name, module in known.items():
        aliases = _module_aliases(module.tree, known)
        for target, node in imported(module, known):
            if isinstance(node, ast.ImportFrom):
                found += [
                    f"{name}: from {target} import {a.name}"
                    for a in node.names
                    if _private(a.name) and f"{node.module}.{a.name}" not in known
                ]
        for node in ast.walk(module.tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _private(node.attr)
            ):
                found.append(f"{name}: {aliases[node.value.id]}.{node.attr}")
    assert found == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_aliases(tree: ast.Module, known: dict[str, object]) -> dict[str, str]:
    """Local names bound to project modules (`import a.b as c`, `from a import b`)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in known and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                if f"{node.module}.{a.name}" in known:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def test_no_private_attribute_is_used_outside_the_module_that_defines_it() -> None:
    """`other._name` where `_name` is not bound anywhere in this module: a private method or
    field of a class defined elsewhere (e.g. one module calling Batcher._submit)."""
    found = []
    for name, module in modules().items():
        bound = _bound_names(module.tree)
        found += [
            f"{name}:{node.lineno}: {ast.unparse(node)}"
            for node in ast.walk(module.tree)
            if isinstance(node, ast.Attribute)
            and _private(node.attr)
            and node.attr not in bound
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ]
    assert found == []


def _bound_names(tree: ast.Module) -> set[str]:
    """Every name this module defines: functions, classes, variables, and self./cls. fields."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            bound.add(node.attr)
    return bound
