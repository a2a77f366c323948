"""The documentation site builds without a warning (a broken link or anchor, a page outside the
nav), and works offline: nothing it loads comes from another host."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from doc_blocks import ROOT

# What a browser fetches by itself: scripts, stylesheets, fonts, images, frames (<a href> is a
# link the reader may follow, not something the page loads).
LOADED = re.compile(
    r"<(?:script|img|iframe|source|embed)\b[^>]*\bsrc\s*=\s*[\"']?(?P<src>[^\"'\s>]+)"
    r"|<link\b[^>]*\bhref\s*=\s*[\"']?(?P<href>[^\"'\s>]+)"
    r"|@import\s+(?:url\()?[\"']?(?P<import>[^\"')\s;]+)"
    r"|url\(\s*[\"']?(?P<url>[^\"')\s]+)",
    re.IGNORECASE,
)
EXTERNAL = re.compile(r"^(?:https?:)?//", re.IGNORECASE)
README = ROOT / "README.md"


def test_the_site_builds_strictly_and_loads_nothing_from_elsewhere(tmp_path: Path) -> None:
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's banner about MkDocs 2.0
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    assert "WARNING" not in build.stderr, build.stderr

    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 10, [p.name for p in pages]
    fetched = []
    for file in [*pages, *site.rglob("*.css")]:
        for found in LOADED.finditer(file.read_text(errors="replace")):
            target = next(v for v in found.groupdict().values() if v)
            if EXTERNAL.match(target):
                fetched.append(f"{file.relative_to(site)}: {target}")
    assert not fetched, "\n".join(sorted(set(fetched)))
    # Search works from file:// too: the offline plugin inlines the index as a script.
    assert (site / "search" / "search_index.js").is_file()


def test_the_readme_links_to_pages_and_headings_that_exist() -> None:
    """The README is outside the site (mkdocs checks only docs/): its links are checked here, the
    anchors against the target's headings as MkDocs and GitHub both spell simple ones."""
    from markdown.extensions.toc import slugify

    broken = []
    for target, anchor in re.findall(
        r"\]\((?!https?:)([^)#\s]+)(?:#([^)\s]+))?\)", README.read_text()
    ):
        page = ROOT / target
        if not page.exists():
            broken.append(target)
        elif anchor:
            headings = re.findall(r"^#+\s+(.+?)\s*$", page.read_text(), re.MULTILINE)
            if anchor not in {slugify(h.replace("`", ""), "-") for h in headings}:
                broken.append(f"{target}#{anchor}")
    assert not broken, broken
