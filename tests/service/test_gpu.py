"""The driver check, against /proc/driver/nvidia/version texts written to real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.inference.gpu import (
    driver_problem,
    driver_version,
    no_cuda_reason,
    onnxruntime_cuda_version,
)

PROPRIETARY = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n"
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
)
OPEN = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  "
    "(dvs-builder@U16-I3-B03-4-3)  Sun Jul 27 07:09:37 UTC 2025\n"
    "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n"
)


@pytest.fixture
def no_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A PATH with nothing on it, so a host's real nvidia-smi cannot answer for the file."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


@pytest.mark.parametrize(("text", "version"), [(PROPRIETARY, "550.54.14"), (OPEN, "580.65.06")])
def test_reads_the_kernel_module_version(
    tmp_path: Path, no_nvidia_smi: Path, text: str, version: str
) -> None:
    proc = tmp_path / "version"
    proc.write_text(text)
    assert driver_version(proc) == version


def test_no_driver_and_no_nvidia_smi_is_none(tmp_path: Path, no_nvidia_smi: Path) -> None:
    assert driver_version(tmp_path / "absent") is None
    garbled = tmp_path / "garbled"
    garbled.write_text("not a driver\n")
    assert driver_version(garbled) is None


def test_falls_back_to_nvidia_smi(tmp_path: Path, no_nvidia_smi: Path) -> None:
    smi = no_nvidia_smi / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 535.161.08\n")
    smi.chmod(0o755)
    assert driver_version(tmp_path / "absent") == "535.161.08"


def test_a_driver_too_old_for_cuda_13_is_one_line_naming_both(tmp_path: Path) -> None:
    proc = tmp_path / "version"
    proc.write_text(PROPRIETARY)
    problem = driver_problem("13.0", driver_version(proc))
    assert problem is not None and "\n" not in problem
    assert "550.54.14" in problem and "CUDA 13.0" in problem and "≥ 580" in problem


@pytest.mark.parametrize(
    ("cuda", "driver"),
    [("13.0", "580.65.06"), ("13.2", "590.1"), ("12.8", "550.54.14"), ("12.8", "580.65.06")],
)
def test_new_enough_drivers_pass(cuda: str, driver: str) -> None:
    assert driver_problem(cuda, driver) is None


def test_cuda_12_needs_525() -> None:
    assert "≥ 525" in (driver_problem("12.4", "470.256.02") or "")


@pytest.mark.parametrize(("cuda", "driver"), [(None, "470.1"), ("13.0", None), (None, None)])
def test_nothing_known_says_nothing(cuda: str | None, driver: str | None) -> None:
    assert driver_problem(cuda, driver) is None


def test_no_driver_says_so_and_how_a_container_gets_one() -> None:
    assert "no NVIDIA driver is visible" in no_cuda_reason("13.0", None)
    assert "--gpus all" in no_cuda_reason("13.0", None)


def test_the_reason_for_an_old_driver_is_the_driver(tmp_path: Path, no_nvidia_smi: Path) -> None:
    proc = tmp_path / "version"
    proc.write_text(PROPRIETARY)
    reason = no_cuda_reason("13.0", driver_version(proc))
    assert reason == driver_problem("13.0", "550.54.14")


def test_a_good_driver_points_at_onnxruntimes_own_error() -> None:
    reason = no_cuda_reason("13.0", "580.65.06")
    assert reason.startswith("NVIDIA driver 580.65.06 is loaded") and "its own error" in reason


def test_cpu_build_has_no_cuda_version() -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime is the CUDA build")
    assert onnxruntime_cuda_version() is None
