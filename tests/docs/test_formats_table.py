"""docs/model.md lists every checkpoint format `vit-train` and `vit-export` read, as the registry
in model_export/formats/ names them: a format added there fails here until the page says what it
reads. Read from the source (each adapter's `Adapter("name", ...)`), so torch is not imported."""

from __future__ import annotations

import re

from doc_blocks import ROOT

FORMATS = ROOT / "model_export" / "formats"
MODEL_PAGE = ROOT / "docs" / "model.md"


def registered() -> set[str]:
    names = set()
    for module in FORMATS.glob("*.py"):
        names.update(re.findall(r'\bAdapter\(\s*"([\w-]+)"', module.read_text()))
    assert len(names) >= 7, names
    return names


def test_the_format_table_lists_every_registered_format() -> None:
    text = MODEL_PAGE.read_text()
    section = text[text.index("## Checkpoint formats") :]
    section = section[: section.index("\n## ")]
    rows = set(re.findall(r"^\| `([\w-]+)` \|", section, re.MULTILINE))
    code = registered()
    assert rows == code, f"only in the code: {code - rows}; only on the page: {rows - code}"


def test_the_format_option_lists_every_registered_format() -> None:
    found = re.search(r"`--format\s+(auto(?:\|[\w-]+)+)`", MODEL_PAGE.read_text())
    assert found, "docs/model.md no longer shows `--format auto|...`"
    assert set(found[1].split("|")) - {"auto"} == registered()


def test_the_model_page_links_to_the_family() -> None:
    assert "(families.md" in MODEL_PAGE.read_text()
