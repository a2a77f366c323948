"""The code blocks of README.md and docs/**/*.md, and which of them run against the service.

The convention (docs/tests.md says it for writers):

- A ```console block runs. `$ ` starts a command (a line ending in `\\` continues it); the lines
  up to the next `$ ` are what it prints. A command that shows nothing must print nothing.
- A ```python block runs when the line before its fence is `<!-- run -->`. A run of comment
  lines (`# ...`, at the start of the line) right after a line with `print(` is what that print
  shows; everything the block prints is compared with those runs in order.
- `<!-- not run: REASON -->` before a block (of any language) keeps it from running.
- Any other block that talks to a service (it mentions localhost:8000, a URL on 127.0.0.1:8000,
  curl, wget, httpx, vit-client, vit_client or InferenceServerClient) is an error: run it, or say
  why not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = "<!-- run -->"
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>.*?)\s*-->")
TALKS_TO_SERVICE = re.compile(
    r"localhost:8000|127\.0\.0\.1:8000/|\b(?:curl|wget|httpx)\b|vit-client|vit_client"
    r"|InferenceServerClient"
)
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str  # without the fences, dedented to the fence
    marker: str  # the line before the fence, stripped

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def not_run_reason(self) -> str | None:
        found = NOT_RUN.fullmatch(self.marker)
        return found["reason"] if found else None

    @property
    def runs(self) -> bool:
        if self.not_run_reason is not None:
            return False
        return self.lang == "console" or (self.lang == "python" and self.marker == RUN)


@dataclass(frozen=True)
class Command:
    command: str  # without the `$ `, continuation lines included
    shown: list[str]  # the lines the docs show it printing


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = [line[indent:] for line in lines[i + 1 : end]]
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        found.append(Block(path, i + 1, opening["lang"], "\n".join(body), before))
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [b for page in pages() for b in blocks(page)]


def unaccounted(block: Block) -> str | None:
    """Why a block breaks the convention, or None."""
    if block.marker == RUN and block.lang != "python":
        return f"{RUN} is for python blocks (```console blocks always run), not ```{block.lang}"
    if block.not_run_reason == "":
        return "<!-- not run: ... --> needs a reason"
    if TALKS_TO_SERVICE.search(block.text) and not block.runs and block.not_run_reason is None:
        return "talks to the service but does not run: make it run, or say why not"
    return None


def commands(block: Block) -> list[Command]:
    """The commands of a ```console block, each with the output shown after it."""
    found: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            if not found:
                raise ValueError(f"{block.where}: output before any `$ ` command: {line!r}")
            found[-1].shown.append(line)
            i += 1
            continue
        command = [line[2:]]
        while command[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            command.append(lines[i])
        found.append(Command("\n".join(command), []))
        i += 1
    for c in found:  # a blank line between commands is spacing, not output
        while c.shown and not c.shown[-1].strip():
            c.shown.pop()
    return found


def printed(block: Block) -> list[str]:
    """What a python block shows it printing: the comment runs after its print lines."""
    shown: list[str] = []
    lines = block.text.splitlines()
    for i, line in enumerate(lines):
        if "print(" not in line:
            continue
        for after in lines[i + 1 :]:
            if after != "#" and not after.startswith("# "):
                break
            shown.append(after[2:])
    return shown
