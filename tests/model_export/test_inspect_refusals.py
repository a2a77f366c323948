"""vit-inspect refuses what it cannot read (one line, exit 2) and says what it skips."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from model_export.inspection.inspector import FIGURES, main
from tests.model_export.inspect_runs import DEMO_CHECKPOINT, image_folder, run
from vit_core.bundle import ATTENTION_DISTANCE, load_bundle, sha256_file


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images"))


def refused(capsys: pytest.CaptureFixture[str], model: Path, images: Path, out: Path) -> str:
    """Run vit-inspect expecting exit 2; the one line it printed after any progress bar."""
    assert main([str(model), "--images", str(images), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert last.startswith("vit-inspect: error: ") and "Traceback" not in err, err
    assert not out.exists()
    return last


def test_empty_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    err = refused(capsys, DEMO_CHECKPOINT, tmp_path / "empty", tmp_path / "out")
    assert "no images" in err


def test_folder_without_a_readable_image_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    (tmp_path / "docs" / "b.png").write_text("text")
    (tmp_path / "docs" / "c.txt").write_text("text")  # not named as an image: not counted
    err = refused(capsys, DEMO_CHECKPOINT, tmp_path / "docs", tmp_path / "out")
    assert "none of its 2 image files is a readable image" in err


def test_unreadable_checkpoint_is_refused(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    assert "not valid JSON" in refused(capsys, broken, images, tmp_path / "out")
    assert "no such file" in refused(capsys, tmp_path / "nothing", images, tmp_path / "out")


def test_command_line_process_exits_2_with_one_line(images: Path, tmp_path: Path) -> None:
    """The real process, as the console script runs it: no traceback on a bad checkpoint."""
    done = subprocess.run(
        [sys.executable, "-m", "model_export.inspection.inspector", str(tmp_path / "missing"),
         "--images", str(images), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"vit-inspect: error: {tmp_path / 'missing'}: no such file or folder\n"


def rewrite_bundle(bundle: Path, copy: Path, edit: Callable[[dict[str, Any], Path], None]) -> Path:
    """A copy of bundle whose model.json (as a dict) and files edit() changes."""
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "model.json").read_text())
    edit(manifest, copy)
    (copy / "model.json").write_text(json.dumps(manifest))
    return copy


def drop_explain(manifest: dict[str, Any], folder: Path) -> None:
    (folder / manifest["graphs"].pop("explain")["file"]).unlink()
    del manifest["validation"]["explain"]


def drop_distance_output(manifest: dict[str, Any], folder: Path) -> None:
    """The explain graph as vit-export wrote it before attention_distance existed."""
    spec = manifest["graphs"]["explain"]
    graph = onnx.load(folder / spec["file"])
    kept = [o for o in graph.graph.output if o.name != ATTENTION_DISTANCE]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    onnx.save(graph, folder / spec["file"])
    spec["sha256"] = sha256_file(folder / spec["file"])
    spec["outputs"] = [o for o in spec["outputs"] if o["name"] != ATTENTION_DISTANCE]


@pytest.mark.parametrize(
    ("edit", "message"),
    [(drop_explain, "no explain graph"), (drop_distance_output, "re-export the bundle")],
    ids=["no-explain-graph", "exported-before-attention-distance"],
)
def test_bundle_that_cannot_explain_is_refused(
    tiny_bundle: Path,
    images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[dict[str, Any], Path], None],
    message: str,
) -> None:
    bundle = rewrite_bundle(tiny_bundle, tmp_path / "bundle", edit)
    load_bundle(bundle)  # a valid bundle: the service would serve it
    assert message in refused(capsys, bundle, images, tmp_path / "out")


def flatten_filters(manifest: dict[str, Any], folder: Path) -> None:
    """Store the explain graph's (D, 3, P, P) patch filters as (D, 3·P·P) and reshape them in
    the graph: the same function, but no RGB filter initializer, as in a hybrid's graph."""
    spec = manifest["graphs"]["explain"]
    graph = onnx.load(folder / spec["file"])
    (conv,) = [t for t in graph.graph.initializer if len(t.dims) == 4 and t.dims[1] == 3]
    weights = onnx.numpy_helper.to_array(conv)
    graph.graph.initializer.remove(conv)
    graph.graph.initializer.extend([
        onnx.numpy_helper.from_array(weights.reshape(len(weights), -1), "filters_flat"),
        onnx.numpy_helper.from_array(np.array(weights.shape, np.int64), "filters_shape"),
    ])  # fmt: skip
    reshape = onnx.helper.make_node("Reshape", ["filters_flat", "filters_shape"], [conv.name])
    graph.graph.node.insert(0, reshape)
    onnx.save(graph, folder / spec["file"])
    spec["sha256"] = sha256_file(folder / spec["file"])


def test_bundle_without_rgb_filters_skips_that_figure_and_says_why(
    tiny_bundle: Path, images: Path, tmp_path: Path
) -> None:
    bundle = rewrite_bundle(tiny_bundle, tmp_path / "bundle", flatten_filters)
    out = tmp_path / "out"
    out.mkdir()
    (out / FIGURES["filters"]).write_bytes(b"a figure of another model")
    report = run(bundle, images, out)
    assert "no (32, 3, 8, 8) patch-embedding filter" in report["filters"]["skipped"]
    assert "filters" not in report["figures"] and not (out / FIGURES["filters"]).exists()
    assert np.asarray(report["attention_distance"]).shape == (2, 2)  # the rest is all there
