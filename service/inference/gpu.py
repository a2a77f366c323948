"""The NVIDIA driver against the CUDA that ONNX Runtime was built with.

ONNX Runtime reports a CUDA session it could not create only as a silent fall-back to the CPU, so
when CUDA is missing the engine asks here what the host shows: no driver at all, or one too old
for the CUDA the wheel was built with (CUDA 13 builds need driver ≥ 580, CUDA 12 builds ≥ 525:
NVIDIA's minor-version compatibility table). An old driver gets one line naming both versions,
not "no GPU visible".

Standard library only: the check must run where nothing else of the service can.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib.util import find_spec
from pathlib import Path

PROC_VERSION = Path("/proc/driver/nvidia/version")
# CUDA major → the oldest driver branch whose libcuda runs every toolkit of that major.
MIN_DRIVER = {11: 450, 12: 525, 13: 580}

# "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 …" (proprietary), or
# "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build …" (open).
_NVRM = re.compile(r"^NVRM version:.*Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)\s", re.M)


def driver_version(proc: Path = PROC_VERSION) -> str | None:
    """The loaded NVIDIA kernel driver's version ("580.65.06"), or None without one."""
    try:
        match = _NVRM.search(proc.read_text())
    except OSError:
        match = None
    if match:
        return match[1]
    return _nvidia_smi_version()


def _nvidia_smi_version() -> str | None:
    """nvidia-smi's answer, where /proc is not the host's (some container runtimes)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    query = [smi, "--query-gpu=driver_version", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.split()
    return lines[0] if lines and re.fullmatch(r"\d+\.\d+(\.\d+)?", lines[0]) else None


def driver_problem(cuda_version: str | None, driver: str | None) -> str | None:
    """One line when the driver is too old for the CUDA build, else None.

    cuda_version is the toolkit ONNX Runtime was built with ("13.0"); driver the loaded driver's
    version. Either unknown → None: nothing can be said, and the caller's own message stands.
    """
    if not cuda_version or not driver:
        return None
    cuda_major, driver_major = int(cuda_version.split(".")[0]), int(driver.split(".")[0])
    need = MIN_DRIVER.get(cuda_major)
    if need is None or driver_major >= need:
        return None
    return (
        f"the NVIDIA driver is {driver}, but this ONNX Runtime is built with CUDA {cuda_version}, "
        f"which needs driver ≥ {need}: upgrade the host's driver to {need} or newer"
    )


def onnxruntime_cuda_version() -> str | None:
    """The CUDA toolkit the installed onnxruntime-gpu was built with; None for CPU builds."""
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        return None
    return getattr(info, "cuda_version", None) or None


def no_cuda_reason(cuda_version: str | None, driver: str | None) -> str:
    """Why a CUDA session could not be made, from what the host shows: no driver, a driver too
    old for the build, or a driver that is fine (then ONNX Runtime's own error, logged just
    before, names the library or device it could not use)."""
    if driver is None:
        return (
            "no NVIDIA driver is visible (no GPU here, or a container started without the "
            "NVIDIA Container Toolkit, e.g. docker run --gpus all)"
        )
    problem = driver_problem(cuda_version, driver)
    return problem or (
        f"NVIDIA driver {driver} is loaded, but ONNX Runtime could not use a GPU or load the "
        "CUDA/cuDNN libraries (its own error above says which)"
    )


def device_decoding_missing() -> str:
    """What device decoding (service/inference/device_decode.py) lacks here, in one line; ""
    when nvImageCodec and onnx are both installed (the gpu extra's)."""
    try:
        missing = [name for name in ("nvidia.nvimgcodec", "onnx") if find_spec(name) is None]
    except ModuleNotFoundError:  # no "nvidia" namespace at all
        missing = ["nvidia.nvimgcodec"]
    if not missing:
        return ""
    return f"{' and '.join(missing)} not installed (the gpu extra installs them)"


def why_no_cuda() -> str:
    """no_cuda_reason for this host and the installed onnxruntime."""
    return no_cuda_reason(onnxruntime_cuda_version(), driver_version())
