"""The reference pages say what the code does: docs/settings.md's settings table lists every field
of `Settings` with its variable, flag and default, and its error table every error with its
status; the settings and the source files the pages name exist. A setting or an error added,
renamed or re-defaulted in the code fails here until the docs say so."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from doc_blocks import ROOT, pages
from pydantic import SecretStr

from service.settings import ENV_PREFIX, Settings
from vit_core.errors import ServiceError, all_errors, status_of

SETTINGS_PAGE = ROOT / "docs" / "settings.md"
# Measurements as they were taken: they may name code that has moved since.
RECORDS = {ROOT / "docs" / "benchmarks.md"}
LITERAL = re.compile(r"`([^`]*)`")
SOURCE = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.py)\b")


def table(page: Path, heading: str) -> list[list[str]]:
    """The first table under `heading` (a line of the page): its rows' cells, header and rule
    left out."""
    lines = page.read_text().splitlines()
    start = lines.index(heading)
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif rows:
            break
    assert len(rows) > 2, f"{page.name}: no table under {heading!r}"
    return rows[2:]


def documented_default(default: Any, shown: str) -> str | None:
    """Why `shown` (the table's default cell) is not the code's `default`, or None."""
    literal = LITERAL.fullmatch(shown)
    if default is None or isinstance(default, SecretStr):
        # Unset: a word or a formula ("unset", "measured", "limit / 4, ≤ 4 GiB"), not a value.
        return f"{shown!r} reads as a value; the code's default is unset" if literal else None
    if literal is None:
        return f"{shown!r} is not one `value`; the code's default is {default!r}"
    text = literal[1]
    if isinstance(default, bool):
        return None if text == str(default).lower() else f"{text!r} is not {default!r}"
    if isinstance(default, int | float):
        try:
            same = float(text) == float(default)
        except ValueError:
            same = False
        return None if same else f"{text!r} is not {default!r}"
    if isinstance(default, Path):
        shown_path = (ROOT / text).resolve()
        return None if shown_path == default.resolve() else f"{text!r} is not {default}"
    return None if text == str(default) else f"{text!r} is not {default!r}"


def literal(cell: str) -> str:
    """What a cell that is one `literal` holds."""
    found = LITERAL.fullmatch(cell)
    assert found, f"{cell!r} is not one `literal`"
    return found[1]


def settings_rows() -> dict[str, list[str]]:
    return {literal(row[0]): row for row in table(SETTINGS_PAGE, "## Settings")}


def test_the_settings_table_is_the_settings_class() -> None:
    rows = settings_rows()
    variables = {ENV_PREFIX + name.upper(): name for name in Settings.model_fields}
    problems = [f"{v} ({name}) is missing" for v, name in variables.items() if v not in rows]
    problems += [f"{v} is in the table but is no setting" for v in rows if v not in variables]
    for variable, name in variables.items():
        if variable not in rows:
            continue
        _, flag, default, meaning = rows[variable]
        if flag != f"`--{name.replace('_', '-')}`":
            problems.append(f"{variable}: flag {flag}, not `--{name.replace('_', '-')}`")
        why = documented_default(Settings.model_fields[name].default, default)
        if why:
            problems.append(f"{variable}: default {why}")
        if not meaning:
            problems.append(f"{variable}: no meaning given")
    assert not problems, "\n".join(problems)


def test_the_error_table_is_the_error_tree() -> None:
    documented = set()
    for status, code, when in table(SETTINGS_PAGE, "## Errors"):
        for s, c in zip(status.split(" / "), code.split(" / "), strict=True):
            documented.add((int(s), literal(c)))
        assert when, f"{status} {code}: no 'when'"
    errors: list[type[ServiceError]] = all_errors()
    actual = {(status_of(cls()), cls.code) for cls in errors}
    missing = [f"{s} {c} is not in the error table" for s, c in sorted(actual - documented)]
    stale = [f"{s} {c} is in the error table but no error" for s, c in sorted(documented - actual)]
    assert not missing + stale, "\n".join(missing + stale)


def test_every_setting_the_pages_name_exists() -> None:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = [
        f"{page.relative_to(ROOT)}: {name}"
        for page in pages()
        if page not in RECORDS
        for name in sorted(set(re.findall(r"\bVIT_[A-Z0-9_]+\b", page.read_text())))
        if name not in known
    ]
    assert not unknown, "\n".join(unknown)


def test_every_source_file_the_pages_name_exists() -> None:
    """`service/edge/inputs.py`, `edge/inputs.py` and `inputs.py` all name a file that must be in
    the repository (ending so); design.md names dozens, and a moved module leaves it wrong."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    files = {f for f in listed if (ROOT / f).exists()}  # deleted but not yet committed: gone
    named = {
        (page.relative_to(ROOT), source)
        for page in pages()
        if page not in RECORDS
        for source in SOURCE.findall(page.read_text())
    }
    assert any(page.name == "design.md" for page, _ in named), "design.md names no module"
    gone = [
        f"{page}: {source}"
        for page, source in sorted(named)
        if not any(f == source or f.endswith("/" + source) for f in files)
    ]
    assert not gone, "\n".join(gone)


@pytest.mark.parametrize(
    ("default", "shown", "fine"),
    [
        (None, "measured", True),
        (None, "limit / 4, ≤ 4 GiB", True),
        (None, "`32`", False),
        (32, "`32`", True),
        (5.0, "`5`", True),
        (32, "`64`", False),
        (32, "unset", False),
        (False, "`false`", True),
        (False, "`true`", False),
        ("auto", "`auto`", True),
        ("auto", "`host`", False),
        (ROOT / "models" / "demo", "`models/demo`", True),
        (ROOT / "models" / "demo", "`models/fashion`", False),
    ],
)
def test_a_default_is_held_to_the_code(default: Any, shown: str, fine: bool) -> None:
    assert (documented_default(default, shown) is None) == fine
