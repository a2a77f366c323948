"""docker/requirements-{gpu,cpu}.txt: complete, hash-pinned, torch-free, in step with
pyproject.toml and with each other. (tests/deploy/test_image_env.py installs one for real.)"""

from __future__ import annotations

import pytest
from deployfiles import lock_module, lock_pins
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def pins(flavor: str) -> dict[str, str]:
    return {name: version for name, (version, _) in lock_pins(flavor).items()}


@pytest.mark.parametrize("flavor", ["gpu", "cpu"])
def test_lock_satisfies_pyproject(flavor: str) -> None:
    """Every serving requirement, and the build backend (the image builds offline), is pinned at
    a version it accepts."""
    locked = pins(flavor)
    for line in lock_module().requirements(flavor):
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in locked, f"{flavor} lock lacks {name}: run `make lock`"
        assert req.specifier.contains(locked[name]), f"{name}=={locked[name]} violates {req}"


@pytest.mark.parametrize("flavor", ["gpu", "cpu"])
def test_serving_image_has_no_torch(flavor: str) -> None:
    assert not {"torch", "torchvision", "transformers"} & set(pins(flavor))


def test_gpu_lock_carries_cuda_and_cudnn_as_wheels() -> None:
    gpu = pins("gpu")
    assert "onnxruntime" not in gpu, "the CPU and GPU wheels install the same module"
    assert any(name.startswith("nvidia-cudnn") for name in gpu)
    assert any(name.startswith("nvidia-cuda-runtime") for name in gpu)


def test_cpu_and_gpu_locks_differ_only_in_onnxruntime() -> None:
    """Same versions of everything shared, so testing the cpu lock tests the gpu image's code."""
    gpu, cpu = pins("gpu"), pins("cpu")
    gpu_only = {name for name in gpu if name.startswith(lock_module().GPU_ONLY)}
    assert set(cpu) - set(gpu) == {"onnxruntime"}
    assert cpu["onnxruntime"] == gpu["onnxruntime-gpu"]
    assert {name: gpu[name] for name in set(gpu) - gpu_only} == {
        name: cpu[name] for name in set(cpu) - {"onnxruntime"}
    }
