"""bench/gpu_wheels.py: wheels cut into batches that fit a device call, carried one call at a
time, joined and checked before anything is installed."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from bench import gpu_wheels

KIB = 1024


def files(folder: Path) -> list[Path]:
    folder.mkdir()
    made = []
    for name, size in (("big-1.0-py3-none-any.whl", 300 * KIB), ("mid-1.0-py3-none-any.whl",
                       50 * KIB), ("tiny-1.0-py3-none-any.whl", 3 * KIB)):  # fmt: skip
        path = folder / name
        path.write_bytes(bytes(range(256)) * (size // 256) + name.encode())
        made.append(path)
    return made


def test_batches_fit_the_budget_and_join_back_into_the_same_wheels(tmp_path: Path) -> None:
    wheels = files(tmp_path / "downloads")
    budget = 128 * KIB
    manifest = gpu_wheels.pack(wheels, tmp_path / "whl", budget)
    total = sum(w.stat().st_size for w in wheels)
    assert manifest["batches"] == -(-total // budget)  # as few calls as the bytes need
    for k in range(1, manifest["batches"] + 1):
        folder = tmp_path / "whl" / f"batch-{k}"
        carried = [p for p in folder.iterdir() if p.name != gpu_wheels.MANIFEST]
        assert sum(p.stat().st_size for p in carried) <= budget
        assert json.loads((folder / gpu_wheels.MANIFEST).read_text()) == manifest
    into = tmp_path / "there"
    for k in range(1, manifest["batches"] + 1):
        last = k == manifest["batches"]
        assert gpu_wheels.receive(tmp_path / "whl" / f"batch-{k}", into, require_all=last) == 0
    assert gpu_wheels.assemble(into) == 0
    for wheel in wheels:
        assert (into / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()


def test_a_missing_or_damaged_batch_is_named_before_anything_is_installed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = gpu_wheels.pack(files(tmp_path / "downloads"), tmp_path / "whl", 128 * KIB)
    into = tmp_path / "there"
    last = tmp_path / "whl" / f"batch-{manifest['batches']}"
    assert gpu_wheels.receive(last, into, require_all=True) == 1  # the machine went back between
    assert "missing: send them again" in capsys.readouterr().err
    assert gpu_wheels.assemble(into) == 1
    assert "not received" in capsys.readouterr().err

    first = tmp_path / "whl" / "batch-1"
    piece = next(p for p in first.iterdir() if p.name != gpu_wheels.MANIFEST)
    piece.write_bytes(b"x" + piece.read_bytes()[1:])  # a transfer that went wrong
    assert gpu_wheels.receive(first, into) == 1
    assert "sha256 mismatch" in capsys.readouterr().err


def test_re_compressed_wheels_hold_the_same_files(tmp_path: Path) -> None:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("pkg/lib.so")
        info.external_attr = 0o755 << 16  # executable: a shared library keeps its mode
        z.writestr(info, b"\0" * 100_000)
        z.writestr("pkg-1.0.dist-info/RECORD", "pkg/lib.so,,\n")
    smaller = gpu_wheels.recompress(wheel, tmp_path / "lzma")
    with zipfile.ZipFile(wheel) as a, zipfile.ZipFile(smaller) as b:
        assert [(i.filename, i.external_attr) for i in a.infolist()] == [
            (i.filename, i.external_attr) for i in b.infolist()
        ]
        assert all(a.read(n) == b.read(n) for n in a.namelist())
        assert {i.compress_type for i in b.infolist()} == {zipfile.ZIP_LZMA}
    assert gpu_wheels.recompress(wheel, tmp_path / "lzma") == smaller  # made once


def test_every_carried_package_is_pinned_by_the_gpu_lock() -> None:
    """make gpu-wheels downloads each at the lock's version: a package the lock drops (or a
    new serving dependency the list lacks) must fail here, not on a lent machine."""
    pins = gpu_wheels.pins()
    assert [name for name in gpu_wheels.CARRY if name not in pins] == []


def test_every_package_the_gpu_lock_pins_is_carried_or_in_the_image() -> None:
    """A serving dependency neither carried nor in the GPU image fails the install or the first
    start there (httptools once did: the fronts' parser), after minutes of device time."""
    pins = gpu_wheels.pins()
    held = set(gpu_wheels.CARRY) | set(gpu_wheels.IMAGE_HAS)
    assert sorted(name for name in pins if name not in held) == []


def test_the_device_calls_end_with_the_benchmark() -> None:
    plan = gpu_wheels.plan(3).splitlines()
    assert len(plan) == 4 and 'carry=[".whl/batch-3"]' in plan[-1]
    assert "--require-all && bash bench/gpu.sh --wheels /tmp/vit-wheels --out $OUT" in plan[-1]
    assert "bench/gpu.sh" not in plan[1]
