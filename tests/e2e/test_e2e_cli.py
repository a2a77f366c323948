"""vit-serve refuses bad settings at start, with a message naming the setting and exit code 2."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

# Root reads any file whatever its mode; without these two capabilities it obeys the mode bits.
AS_UNPRIVILEGED = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                   "--bounding-set=-dac_override,-dac_read_search"]  # fmt: skip


def vit_serve(
    *flags: str, prefix: Sequence[str] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VIT_")} | env
    return subprocess.run(
        [*prefix, sys.executable, "-m", "service.cli", *flags],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ((), {"VIT_MAX_BATCH_SIZE": "0"},
         "invalid setting max_batch_size (--max-batch-size / VIT_MAX_BATCH_SIZE)"),
        (("--port", "http"), {}, "invalid setting port (--port / VIT_PORT)"),
        (("--providers", "tpu"), {}, "invalid setting providers"),
        (("--max-images-per-request", "999"), {}, "exceeds max_queue_images"),
        ((), {"VIT_ENGINE_LANES": "65"},
         "invalid setting engine_lanes (--engine-lanes / VIT_ENGINE_LANES)"),
    ],
    ids=["env", "flag", "choice", "cross-field", "lanes"],
)  # fmt: skip
def test_invalid_settings_exit_2_naming_the_setting(
    tiny_bundle: Path, flags: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    done = vit_serve("--bundle", str(tiny_bundle), *flags, **env)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_folder_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    done = vit_serve("--bundle", str(tmp_path))
    assert done.returncode == 2
    assert "invalid setting bundle (--bundle / VIT_BUNDLE)" in done.stderr
    assert "holds no model.json" in done.stderr


def test_a_corrupt_bundle_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    with open(copy / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    done = vit_serve("--bundle", str(copy))
    assert done.returncode == 2 and "sha256 does not match model.json" in done.stderr


def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def one_line_exit_2(done: subprocess.CompletedProcess[str], *phrases: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("vit-serve: invalid setting bundle (--bundle / VIT_BUNDLE): ")
    assert all(p in lines[0] for p in phrases), lines[0]


@pytest.mark.parametrize(("role", "output"), [("fast", "embedding"), ("explain", "rollout")])
def test_a_bundle_without_an_output_the_service_reads_is_refused_at_start(
    tiny_bundle: Path, tmp_path: Path, role: str, output: str
) -> None:
    copy = bundle_copy(tiny_bundle, tmp_path)
    manifest = json.loads((copy / "model.json").read_text())
    outputs = manifest["graphs"][role]["outputs"]
    manifest["graphs"][role]["outputs"] = [o for o in outputs if o["name"] != output]
    (copy / "model.json").write_text(json.dumps(manifest))
    one_line_exit_2(vit_serve("--bundle", str(copy)), f"{role} graph lacks the output(s) {output}")


def test_a_bundle_whose_graph_lies_about_its_outputs_is_refused_at_start(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """model.json lists the outputs but the graph itself lacks one: found when the session opens."""
    onnx = pytest.importorskip("onnx")
    copy = bundle_copy(tiny_bundle, tmp_path)
    graph = onnx.load(copy / "model.onnx")
    kept = [o for o in graph.graph.output if o.name != "embedding"]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    onnx.save(graph, copy / "model.onnx")
    manifest = json.loads((copy / "model.json").read_text())
    manifest["graphs"]["fast"]["sha256"] = hashlib.sha256(
        (copy / "model.onnx").read_bytes()
    ).hexdigest()
    (copy / "model.json").write_text(json.dumps(manifest))
    one_line_exit_2(vit_serve("--bundle", str(copy)), "model.onnx", "lacks ['embedding']")


def test_a_bundle_the_service_user_cannot_read_is_refused_at_start(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    copy = bundle_copy(tiny_bundle, tmp_path)
    (copy / "model.onnx").chmod(0)
    done = vit_serve("--bundle", str(copy), prefix=AS_UNPRIVILEGED if os.geteuid() == 0 else ())
    one_line_exit_2(done, "model.onnx: cannot be read (Permission denied)")


def test_cuda_demanded_without_cuda_is_refused(tiny_bundle: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    done = vit_serve("--bundle", str(tiny_bundle), "--providers", "cuda")
    assert done.returncode == 2
    assert (
        "invalid setting providers (--providers / VIT_PROVIDERS): VIT_PROVIDERS=cuda" in done.stderr
    )


def test_unknown_flags_and_help() -> None:
    unknown = vit_serve("--max-batch", "4")
    assert unknown.returncode == 2 and "unrecognized arguments" in unknown.stderr
    help = vit_serve("--help")
    assert help.returncode == 0
    for flag in ("--bundle", "--max-batch-size", "--max-wait-ms", "--api-key", "--providers"):
        assert flag in help.stdout
