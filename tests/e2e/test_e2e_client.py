"""vit-client against a real vit-service serving the demo model, with the repository's examples/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from live import Server, free_port
from PIL import Image
from vit_client import ServerUnreachable, Unauthorized, classify, embed
from vit_client.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEMO, EXAMPLES = ROOT / "models" / "demo", ROOT / "examples"
SHAPES = ["circle", "cross", "hexagon", "square", "star", "triangle"]  # examples/, sorted by name
Serve = Callable[..., Server]


@pytest.fixture
def demo(serve: Serve) -> Server:
    return serve(bundle=DEMO, max_batch_size=4)


def test_classify_in_python_answers_every_example_in_order(demo: Server) -> None:
    results = classify([EXAMPLES], url=demo.url, top_k=2, concurrency=4)
    assert [r.path.stem for r in results] == [*SHAPES, "truncated"]
    assert [r.result["predictions"][0]["label"] for r in results[:-1] if r.result] == SHAPES
    bad = results[-1]
    assert not bad.ok and bad.error and (bad.error.status, bad.error.code) == (400, "invalid_image")


def test_requests_are_in_flight_together(serve: Serve) -> None:
    """4 images with concurrency 4 reach the server together: one batch of 4, not 4 of 1 (each
    of those would wait the full 5 s for company)."""
    server = serve(bundle=DEMO, max_batch_size=4, max_wait_ms=5000)
    results = classify([EXAMPLES / f"{s}.png" for s in ("circle", "hexagon", "triangle")] + [
        EXAMPLES / "star.jpg"
    ], url=server.url, concurrency=4)  # fmt: skip
    assert all(r.ok for r in results)
    assert server.sample("vit_batch_size_count", graph="fast") == 1
    assert server.sample("vit_batch_size_sum", graph="fast") == 4


def test_cli_table_marks_the_broken_image_and_exits_1(
    demo: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["classify", str(EXAMPLES), "--url", demo.url, "--top-k", "2", "--no-progress"])
    out, err = capsys.readouterr()
    header, *rows = out.splitlines()
    assert header.split() == ["image", "label", "score", "next"]
    assert [row.split()[1] for row in rows] == [*SHAPES, "error"]
    assert "400 invalid_image" in rows[-1] and "truncated.jpg" in rows[-1]
    assert code == 1 and err == "vit-client: 1 of 7 images failed\n"


def test_cli_jsonl_embeddings_of_a_glob(demo: Server, capsys: pytest.CaptureFixture[str]) -> None:
    pattern = str(EXAMPLES / "*.png")
    code = main(["embed", pattern, "--url", demo.url, "--normalize", "--format", "jsonl"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [Path(r["image"]).name for r in rows] == ["circle.png", "hexagon.png", "triangle.png"]
    for row in rows:
        assert len(row["embedding"]) == 128  # the demo model's D
        assert sum(v * v for v in row["embedding"]) == pytest.approx(1.0, rel=1e-4)


def test_attention_overlays_are_saved_as_pngs(demo: Server, tmp_path: Path) -> None:
    sources = [str(EXAMPLES / "star.jpg"), str(EXAMPLES / "cross.jpg")]
    assert main(["attention", *sources, "--url", demo.url, "--png-dir", str(tmp_path)]) == 0
    for name in ("star.png", "cross.png"):
        with Image.open(tmp_path / name) as overlay:
            assert overlay.format == "PNG" and overlay.size == (224, 224)


def test_the_api_key_comes_from_the_environment(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(bundle=DEMO, max_batch_size=2, api_key="s3cret")
    monkeypatch.delenv("VIT_API_KEY", raising=False)
    with pytest.raises(Unauthorized, match="401"):
        embed([EXAMPLES / "star.jpg"], url=server.url)
    assert main(["classify", str(EXAMPLES / "star.jpg"), "--url", server.url]) == 3
    assert capsys.readouterr().err.startswith("vit-client: 401 from")
    monkeypatch.setenv("VIT_API_KEY", "s3cret")
    assert main(["classify", str(EXAMPLES / "star.jpg"), "--url", server.url]) == 0


def test_no_server_is_one_line_and_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    with pytest.raises(ServerUnreachable):
        classify([EXAMPLES / "star.jpg"], url=url)
    assert main(["classify", str(EXAMPLES / "star.jpg"), "--url", url]) == 3
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"vit-client: cannot reach {url}")


def test_the_module_runs_as_a_program(demo: Server) -> None:
    """`python -m vit_client`, as the console script runs it, in its own process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "client"), *sys.path])}
    command = [sys.executable, "-m", "vit_client", "classify", str(EXAMPLES / "star.jpg")]
    done = subprocess.run(
        [*command, "--url", demo.url, "--format", "jsonl"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predictions"][0]["label"] == "star"
