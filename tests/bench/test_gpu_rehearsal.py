"""bench/gpu.sh --rehearse: every step of the GPU benchmark, run on this CPU as the GPU machine
would run it (a small ViT, the CPU provider, the decode stage in its CPU placement, 2 fronts), so
that the script a lent GPU runs once cannot rot between loans."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_http import bottleneck
from bench.gpu_steps import ORDER, TITLES

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("torch", reason="the rehearsal exports its bundles (the export extra)")
pytest.importorskip("nvidia.nvimgcodec", reason="the decode stage needs nvImageCodec")


def test_the_gpu_benchmark_rehearses_every_step_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIT_")}
    done = subprocess.run(
        ["bash", "bench/gpu.sh", "--rehearse", "--out", str(out), "--work", str(tmp_path / "w")],
        cwd=ROOT, env={**env, "PYTHON": sys.executable}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    report = (out / "report.md").read_text()
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}\n{report}"

    results = json.loads((out / "results.json").read_text())
    assert {step: s["status"] for step, s in results["status"].items()} == dict.fromkeys(
        ORDER, "passed"
    )
    for step in ORDER:  # every step's table, none empty
        assert f"## {TITLES[step]}" in report
        assert results["steps"][step]["table"].count("\n") >= 2, step
    assert "## Errors\n\nnone" in report
    # The CUDA columns are there, and say why they are empty.
    assert "| fp16 | on | — |" in report  # CUDA graphs
    if shutil.which("nvidia-smi") is None:
        assert "— (no nvidia-smi)" in report
    # A device call brings back at most 8 files: the report, the figures and the log.
    assert sorted(p.name for p in out.iterdir()) == ["gpu.log", "report.md", "results.json"]
    # The device decode's pixels are the host transform's, and HTTP answered every request.
    decode = results["steps"]["decode"]["data"]["pixels"]
    assert decode["p99_9_abs"] <= 1
    runs = results["steps"]["http"]["data"]["runs"]
    assert runs and all(r["errors"] == 0 and r["images_per_s"] > 0 for r in runs)


def test_a_failed_step_is_recorded_and_the_next_ones_still_run(tmp_path: Path) -> None:
    """No bundles (the export step is left out): the step that needs them fails and says why,
    the step after it still runs, and the exit status says something failed."""
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", "bench/gpu.sh", "--rehearse", "--out", str(out), "--work", str(tmp_path / "w"),
         "--steps", "parity,decode"],
        cwd=ROOT, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    status = json.loads((out / "results.json").read_text())["status"]
    assert status["parity"]["status"].startswith("failed")
    assert "the export step did not write it" in status["parity"]["error"]
    assert status["decode"]["status"] == "passed"
    report = (out / "report.md").read_text()
    assert "| parity | **failed (exit 1)** |" in report and "| export | not run |" in report


def figures(**overrides: object) -> dict[str, object]:
    """One load run's figures on a 16-core machine where nothing is saturated."""
    quiet: dict[str, object] = {
        "gpu_util_mean": 40.0,
        "cores": {"supervisor": 0.0, "engine": 1.2, "front-0": 0.3, "front-1": 0.3},
        "engine_threads": [("decode_0/12", 0.5)],
        "clients": [{"pid": 1, "cores": 0.2}],
    }
    return {**quiet, **overrides}


def test_the_bottleneck_is_named_from_the_figures() -> None:
    def said(**overrides: object) -> str:
        return bottleneck(figures(**overrides), cpus=16)

    assert said(gpu_util_mean=97.0).startswith("the GPU")
    assert said(engine_threads=[("vit-engine/3", 0.98)]).startswith("one thread of the engine")
    assert said(cores={"engine": 0.5, "front-0": 0.95, "front-1": 0.97}).startswith("the fronts")
    assert said(clients=[{"pid": 1, "cores": 1.0}]).startswith("the load generator")
    assert said().startswith("nothing saturated")
    assert said(gpu_util_mean=None).startswith("nothing saturated")  # no nvidia-smi
