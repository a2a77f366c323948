"""Which image files a list of sources names: files as given, folders searched recursively,
glob patterns (`*`, `?`, `[...]`, `**`) expanded. Every source must name at least one file."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from vit_client.errors import InputError

# What the server calls a folder's images (vit_core/images.py, tied by a test); others are not sent.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


def find_images(sources: Iterable[str | Path]) -> list[Path]:
    """Files to send, in the order the sources name them, each once."""
    found: dict[Path, None] = {}  # an ordered set
    for source in sources:
        for path in _expand(str(source)):
            found.setdefault(path, None)
    if not found:
        raise InputError("no images given")
    return list(found)


def _expand(source: str) -> list[Path]:
    path = Path(source)
    if path.is_file():
        return [path]  # named explicitly: sent whatever its suffix, the server judges it
    if path.is_dir():
        images = sorted(p for p in path.rglob("*") if _is_image(p))
        if not images:
            raise InputError(f"{source}: the folder holds no images ({_suffixes()})")
        return images
    if any(c in source for c in "*?["):
        matches = sorted(Path(m) for m in glob.glob(source, recursive=True))
        images = [m for m in matches if _is_image(m)]
        if not images:
            raise InputError(f"{source}: no image matches the pattern")
        return images
    raise InputError(f"{source}: no such file or folder")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _suffixes() -> str:
    return " ".join(sorted(IMAGE_SUFFIXES))
