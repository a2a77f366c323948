"""The GPU serving image, run without a GPU: everything short of running a CUDA kernel.

Every shared library ONNX Runtime's CUDA provider loads (the provider itself, and the CUDA and
cuDNN wheels it dlopens) resolves inside the image except the driver's libcuda.so.1, which the
NVIDIA Container Toolkit mounts from the host; the onnxruntime build names the CUDA it needs, so
the driver check can compare; and without a GPU the service starts on the CPU saying why, or, with
VIT_PROVIDERS=cuda as compose sets it, refuses in one line, which names a driver too old.
`make test-image-gpu` builds the image and runs this file; elsewhere it skips.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from container import IMAGE, Container, compose_flags, engine, needs_image, remove, start
from deployfiles import CUDA_ARCHS, lock_pins
from net import free_port

from service.inference.gpu import MIN_DRIVER, driver_problem

pytestmark = needs_image
DRIVER_LIBRARY = "libcuda.so.1"

# Run inside the image: ldd every library of the CUDA provider and of the nvidia wheels.
LDD = """
import glob, json, os, subprocess, sysconfig
site = sysconfig.get_paths()["purelib"]
libs = glob.glob(f"{site}/onnxruntime/capi/libonnxruntime_providers_cuda.so")
libs += glob.glob(f"{site}/nvidia/**/lib/lib*.so*", recursive=True)
missing = {}
for lib in libs:
    out = subprocess.run(["ldd", lib], capture_output=True, text=True, check=True).stdout
    gone = [line.split()[0] for line in out.splitlines() if "not found" in line]
    if gone:
        missing[os.path.basename(lib)] = gone
print(json.dumps({"checked": sorted(os.path.basename(lib) for lib in libs), "missing": missing}))
"""


def python_in_image(code: str) -> str:
    return engine("run", "--rm", "--entrypoint=python", IMAGE, "-c", code).stdout


def test_every_cuda_library_resolves_but_the_drivers() -> None:
    found = json.loads(python_in_image(LDD))
    assert "libonnxruntime_providers_cuda.so" in found["checked"]
    assert any(name.startswith("libcudnn") for name in found["checked"])
    assert any(name.startswith("libcublas") for name in found["checked"])
    unresolved = {lib for gone in found["missing"].values() for lib in gone}
    assert unresolved <= {DRIVER_LIBRARY}, found["missing"]


def test_onnxruntime_names_the_cuda_it_was_built_with() -> None:
    code = "from service.inference.gpu import onnxruntime_cuda_version as v; print(v())"
    cuda = python_in_image(code).strip()
    assert int(cuda.split(".")[0]) in MIN_DRIVER, cuda


def test_without_a_gpu_auto_runs_on_the_cpu_and_says_why(compose: dict[str, Any]) -> None:
    reason = python_in_image(
        "from service.inference.gpu import why_no_cuda; print(why_no_cuda())"
    ).strip()
    flags = compose_flags(compose["services"]["api"], VIT_PROVIDERS="auto")
    container: Container = start(flags, free_port())
    try:
        assert f"CUDA is not available ({reason}); running on the CPU" in container.logs()
    finally:
        remove(container)


def test_compose_gpu_service_refuses_without_a_gpu_in_one_line(compose: dict[str, Any]) -> None:
    """VIT_PROVIDERS=cuda, as compose sets it: exit code 2 and our one line, no traceback (ONNX
    Runtime logs its own error about the library it could not load just before)."""
    reason = python_in_image(
        "from service.inference.gpu import why_no_cuda; print(why_no_cuda())"
    ).strip()
    done = engine("run", "--rm", *compose_flags(compose["services"]["api"]), IMAGE, check=False)
    assert done.returncode == 2, done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("vit-serve:")]
    assert ours == [
        "vit-serve: invalid setting providers (--providers / VIT_PROVIDERS): VIT_PROVIDERS=cuda, "
        f"but ONNX Runtime could not create a CUDA session: {reason}"
    ]
    assert "Traceback" not in done.stderr


def test_cuda_kernels_are_built_for_what_the_deployment_admits(tmp_path: Path) -> None:
    """cuobjdump, from NVIDIA's wheel of the lock's CUDA release, lists the cubins in the image's
    CUDA provider: exactly CUDA_ARCHS, which the Kubernetes affinity and docs/deployment.md rely
    on."""
    version = lock_pins("gpu")["nvidia-cuda-runtime"][0]
    download = ["pip", "download", "--no-deps", "--quiet", "--dest", str(tmp_path)]
    subprocess.run(
        [sys.executable, "-m", *download, f"nvidia-cuda-cuobjdump=={version}"], check=True
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith("/bin/cuobjdump")]
        cuobjdump = Path(archive.extract(member, tmp_path))
    cuobjdump.chmod(0o755)
    capi = python_in_image("import onnxruntime.capi as c, os; print(os.path.dirname(c.__file__))")
    container = engine("create", IMAGE).stdout.strip()
    try:
        provider = f"{capi.strip()}/libonnxruntime_providers_cuda.so"
        engine("cp", f"{container}:{provider}", str(tmp_path / "provider.so"))
    finally:
        engine("rm", container)
    listed = subprocess.run(
        [cuobjdump, "--list-elf", tmp_path / "provider.so"], capture_output=True, text=True
    ).stdout
    archs = {arch for arch in re.findall(r"\.(sm_\w+)\.cubin", listed)}
    assert archs == set(CUDA_ARCHS)
    ptx = subprocess.run(
        [cuobjdump, "--list-ptx", tmp_path / "provider.so"], capture_output=True, text=True
    )
    assert "No PTX" in ptx.stdout + ptx.stderr, "PTX would let newer GPUs JIT-compile the kernels"


def test_an_old_driver_is_named_in_the_one_line(tmp_path: Path) -> None:
    """A host whose driver is too old for CUDA 13: its version reaches the service (here through
    nvidia-smi, which the NVIDIA Container Toolkit mounts too) and the refusal names it."""
    if Path("/proc/driver/nvidia/version").exists():
        pytest.skip("this host has an NVIDIA driver, which the container would see instead")
    cuda = python_in_image(
        "from service.inference.gpu import onnxruntime_cuda_version as v; print(v())"
    )
    old = f"{MIN_DRIVER[int(cuda.split('.')[0])] - 30}.54.14"
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho {old}\n")
    smi.chmod(0o755)
    mount = f"--volume={smi}:/usr/local/bin/nvidia-smi:ro"
    done = engine("run", "--rm", mount, "--env=VIT_PROVIDERS=cuda", IMAGE, check=False)
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("vit-serve:")]
    problem = driver_problem(cuda.strip(), old)
    assert problem and old in problem
    assert line.endswith(f"could not create a CUDA session: {problem}")
