"""vit-client without a server: which files the sources name, and the errors that stop a run
before any request (exit code 2)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from vit_client.api import _error
from vit_client.cli import main
from vit_client.errors import InputError
from vit_client.inputs import find_images


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """a.jpg, b.PNG, notes.txt, sub/c.webp, sub/deeper/d.jpeg, empty/"""
    for name in ("a.jpg", "b.PNG", "notes.txt", "sub/c.webp", "sub/deeper/d.jpeg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    return tmp_path


def names(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_a_folder_is_searched_recursively_for_images(tree: Path) -> None:
    found = find_images([tree])
    assert names(found, tree) == ["a.jpg", "b.PNG", "sub/c.webp", "sub/deeper/d.jpeg"]


def test_globs_expand_and_each_file_is_sent_once(tree: Path) -> None:
    found = find_images([tree / "*.jpg", tree / "**" / "*.jpeg", tree / "a.jpg"])
    assert names(found, tree) == ["a.jpg", "sub/deeper/d.jpeg"]


def test_a_named_file_is_sent_whatever_its_suffix(tree: Path) -> None:
    assert names(find_images([tree / "notes.txt"]), tree) == ["notes.txt"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing.jpg", "no such file or folder"),
        ("empty", "the folder holds no images"),
        ("*.gif", "no image matches the pattern"),
    ],
)
def test_a_source_naming_nothing_stops_the_run(tree: Path, source: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        find_images([tree / "a.jpg", tree / source])


def test_cli_input_errors_are_one_line_and_exit_2(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["classify", str(tree / "missing.jpg")]) == 2
    assert (
        capsys.readouterr().err == f"vit-client: {tree / 'missing.jpg'}: no such file or folder\n"
    )
    assert main(["classify", str(tree / "a.jpg"), "--url", "localhost:8000"]) == 2
    assert "--url must start with http://" in capsys.readouterr().err


def test_an_error_without_the_services_body_keeps_its_status() -> None:
    """What a proxy in front of the service answers (HTML, no JSON) still reads as one line."""
    answer = httpx.Response(502, text="<html>Bad Gateway</html>\n<body/>")
    error = _error(answer)
    assert (error.status, error.code, error.message) == (
        502,
        "http_error",
        "<html>Bad Gateway</html>",
    )
    service = httpx.Response(413, json={"error": {"code": "payload_too_large", "message": "big"}})
    assert str(_error(service)) == "413 payload_too_large: big"


def test_the_client_finds_the_images_the_service_would(tree: Path) -> None:
    """vit_client is installed without the service, so it keeps its own copy of the suffixes:
    tied here to the core's, and a folder lists the same files both ways."""
    from vit_client.inputs import IMAGE_SUFFIXES

    from vit_core.images import IMAGE_SUFFIXES as CORE_SUFFIXES
    from vit_core.images import image_files

    assert IMAGE_SUFFIXES == CORE_SUFFIXES
    assert find_images([tree]) == image_files(tree)
