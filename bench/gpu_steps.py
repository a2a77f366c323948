"""The steps of bench/gpu.sh, one function each; every step writes WORK/raw/STEP.json (its table,
notes, errors and figures), and `report` turns them into OUT/report.md and OUT/results.json.

    python bench/gpu_steps.py STEP --work WORK [--rehearse] [--wheels /tmp/vit-wheels]
    python bench/gpu_steps.py report --work WORK --out OUT

    install   the carried wheels joined and checked (bench/gpu_wheels.py), installed with the
              project into WORK/site (--target: the machine's own packages stay as they are);
              WORK/env.sh puts them first, with the CUDA libraries PyTorch brought on the loader's
              path. Rehearsal: the project's own wheel cut into pieces, carried, joined, installed
    machine   nvidia-smi, driver, CPUs, Python, PyTorch, ONNX Runtime, nvImageCodec
    export    random-weight bundles in fp32 and fp16 (vit-export's export_bundle and its checks)
    parity    1. the provider each graph actually runs on (the service's Engine, and a profile of
              every node), and the graphs against PyTorch on the same device with the exporter's
              gates (fp32: its float32-noise gate; fp16: top-1 and cosine)
    engine    2. the service's Engine (IO binding, pinned buffer, CUDA graphs) on the fast graph
              at each batch size, fp32 and fp16, CUDA graphs off and on; explain at one size
    decode    3. the device decode stage (bench/device_decode.py): images/s and pixels
    http      4. vit-serve (fp16, its fronts, --decode device) under closed-loop load from this
              machine: images/s, p50/p99, each process's CPU, GPU utilisation, the bottleneck
              (bench/gpu_http.py)

--rehearse runs the same code on a CPU with sizes a 2-core CI machine finishes in a minute or two:
a small random ViT in place of ViT-B/16, the CPU provider, the decode stage in its CPU placement,
2 fronts; CUDA columns say "—".
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: bench.*, service, vit_core

DASH = "—"
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
PRECISIONS = ("fp32", "fp16")
ORDER = ("install", "machine", "export", "parity", "engine", "decode", "http")
TITLES = {
    "install": "Install: the carried wheels and the project",
    "machine": "Machine",
    "export": "Export: random-weight bundles",
    "parity": "1. The provider in use, and parity with PyTorch",
    "engine": "2. Engine throughput (the fast graph; images/s)",
    "decode": "3. Device decode (640×480 JPEGs)",
    "http": "4. Through HTTP (vit-serve, closed-loop load on the same machine)",
}
GOAL = 10_000  # images/s through HTTP on one GPU: the goal line


@dataclass(frozen=True)
class Sizes:
    """What each step measures: ViT-B/16 on a GPU, or the rehearsal's CPU-sized stand-ins."""

    model: str
    engine_batches: tuple[int, ...]
    explain_batch: int
    engine_seconds: float  # per cell
    decode_batches: tuple[int, ...]
    decode_seconds: float
    fronts: int
    connections: dict[int, tuple[int, ...]]  # images per request → connection counts
    load_seconds: float
    load_warmup: float
    load_processes: int
    ready_timeout: float


REAL = Sizes(
    model="random ViT-B/16 (86M parameters, 224 px, 1000 classes)",
    engine_batches=(1, 8, 32, 64, 128, 256),
    explain_batch=32,
    engine_seconds=0.5,
    decode_batches=(32, 128),
    decode_seconds=1.0,
    fronts=15,
    connections={1: (64, 256, 512), 32: (64, 256)},
    load_seconds=6.0,
    load_warmup=2.0,
    load_processes=4,
    ready_timeout=240.0,
)
REHEARSAL = Sizes(
    model="random small ViT (D=64, 2 blocks, 2 heads, 224 px, 10 classes): the rehearsal's "
    "stand-in for ViT-B/16",
    engine_batches=(1, 8),
    explain_batch=8,
    engine_seconds=0.3,
    decode_batches=(8, 32),
    decode_seconds=0.3,
    fronts=2,
    connections={1: (8,), 32: (2,)},
    load_seconds=2.0,
    load_warmup=1.0,
    load_processes=1,
    ready_timeout=180.0,
)


@dataclass
class Context:
    work: Path
    rehearse: bool
    wheels: Path

    @property
    def sizes(self) -> Sizes:
        return REHEARSAL if self.rehearse else REAL

    @property
    def device(self) -> str:
        return "cpu" if self.rehearse else "cuda"

    @property
    def providers(self) -> str:  # VIT_PROVIDERS
        return "cpu" if self.rehearse else "cuda"

    def bundle(self, precision: str) -> Path:
        folder = self.work / "bundles" / precision
        if not (folder / "model.json").is_file():
            raise StepError(f"no {precision} bundle in {folder}: the export step did not write it")
        return folder


class StepError(RuntimeError):
    """A step cannot go on; its message is the report's line."""


@dataclass
class Result:
    table: str = ""
    notes: list[str] | None = None
    errors: list[str] | None = None
    data: Any = None

    def note(self, line: str) -> None:
        self.notes = [*(self.notes or []), line]

    def error(self, line: str) -> None:
        print(f"error: {line}", file=sys.stderr, flush=True)
        self.errors = [*(self.errors or []), line]


# -- the model ---------------------------------------------------------------------------------


def model_config(rehearse: bool) -> Any:
    from model_export.model.presets import preset
    from model_export.model.vit import ViTConfig

    if rehearse:
        return ViTConfig(
            image_size=224, patch_size=16, dim=64, depth=2, heads=2, mlp_dim=128, num_classes=10
        )
    return preset("vit-b16")


def make_model(rehearse: bool) -> tuple[Any, float]:
    """The random model every step uses (seed 0: the same weights in every process), and a
    checksum of its weights that says so."""
    import torch

    from model_export.model.vit import ViT

    torch.manual_seed(0)
    model = ViT(model_config(rehearse)).eval()
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    return model, checksum


# -- install -----------------------------------------------------------------------------------


def install(ctx: Context) -> Result:
    """Wheels and the project into WORK/site, and WORK/env.sh that puts them first."""
    from bench import gpu_wheels

    result = Result(data={})
    site, dist = ctx.work / "site", ctx.work / "dist"
    shutil.rmtree(site, ignore_errors=True)
    pip = [sys.executable, "-m", "pip"]
    quiet = ["--quiet", "--disable-pip-version-check", "--no-input"]
    started = time.perf_counter()
    # The project's wheel, built here without the network (setuptools from this environment),
    # from a clean copy of what it packages: no build/ left by an earlier build slips into it.
    source = ctx.work / "source"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("vit_core", "model_export", "service"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    run([*pip, "wheel", *quiet, "--no-deps", "--no-index", "--no-build-isolation",
         "--wheel-dir", str(dist), str(source)])  # fmt: skip
    project = sorted(dist.glob("vit_service-*.whl"))[-1]
    received = ctx.wheels
    if ctx.rehearse:
        # The carrying rehearsed on the project's wheel: cut into batches of 64 kB, each received
        # as a device call would, joined and checked.
        batches, received = ctx.work / "carried", ctx.work / "received"
        manifest = gpu_wheels.pack([project], batches, 64 * 1024)
        for k in range(1, int(manifest["batches"]) + 1):  # type: ignore[call-overload]
            last = k == manifest["batches"]
            if gpu_wheels.receive(batches / f"batch-{k}", received, require_all=last):
                raise StepError(f"batch {k} did not arrive whole")
        result.note(
            f"the carrying rehearsed: the project's wheel in {manifest['batches']} "
            "batches, received, joined and checked"
        )
    if gpu_wheels.assemble(received):
        raise StepError(f"the wheels in {received} are incomplete (the messages above say which)")
    wheels = sorted((received / "wheels").glob("*.whl"))
    if not ctx.rehearse:
        wheels.append(project)
    run(
        [
            *pip,
            "install",
            *quiet,
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--no-cache-dir",
            "--target",
            str(site),
            *map(str, wheels),
        ]
    )
    libs = cuda_library_folders([site, *map(Path, sys.path[1:])])
    lines = [
        f"export PYTHONPATH={site}${{PYTHONPATH:+:$PYTHONPATH}}",
        f"export PATH={site / 'bin'}:$PATH",
    ]
    if libs:  # onnxruntime-gpu looks for them beside itself; PyTorch's are in its own site
        lines.append(
            f"export LD_LIBRARY_PATH={':'.join(map(str, libs))}"
            "${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        )
    (ctx.work / "env.sh").write_text("\n".join(lines) + "\n")
    seconds = time.perf_counter() - started
    names = [w.name for w in wheels]
    result.data = {
        "wheels": names,
        "site": str(site),
        "library_folders": list(map(str, libs)),
        "seconds": seconds,
    }
    rows = "\n".join(f"| {name} |" for name in names)
    result.table = f"| installed into {site} ({seconds:.0f} s) |\n|---|\n{rows}"
    if libs:
        result.note("on the loader's path: " + ", ".join(map(str, libs)))
    return result


def cuda_library_folders(sites: list[Path]) -> list[Path]:
    """nvidia/*/lib folders (CUDA, cuDNN, nvJPEG wheels) under these site folders."""
    found: list[Path] = []
    for site in sites:
        if site.is_dir():
            found += sorted(p for p in site.glob("nvidia/*/lib") if p.is_dir())
    return list(dict.fromkeys(found))


def run(command: list[str], timeout: float = 600) -> str:
    """A command's output; its tail in the error when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise StepError(f"{' '.join(command[:4])} … exited {done.returncode}:\n" + "\n".join(tail))
    return done.stdout


# -- machine -----------------------------------------------------------------------------------


def machine(ctx: Context) -> Result:
    import numpy as np
    import onnxruntime as ort

    from service.inference.gpu import driver_version, onnxruntime_cuda_version

    info: dict[str, Any] = {
        "mode": "rehearsal (CPU)" if ctx.rehearse else "GPU",
        "model": ctx.sizes.model,
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(_mem_total() / 2**30, 1),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "onnxruntime": f"{ort.__version__} ({_package_of(ort)}), CUDA build "
        f"{onnxruntime_cuda_version() or 'none'}",
        "onnxruntime_providers": ort.get_available_providers(),
        "driver": driver_version() or DASH,
        "gpu": nvidia_smi(
            ["--query-gpu=name,memory.total,clocks.max.sm,power.limit", "--format=csv,noheader"]
        )
        or DASH,
        "cuda_driver_api": _smi_cuda_version() or DASH,
    }
    try:
        import torch

        cuda = torch.cuda.is_available()
        name = torch.cuda.get_device_name(0) if cuda else "no GPU"
        info["torch"] = f"{torch.__version__} (CUDA {torch.version.cuda}; {name})"
    except ImportError as e:
        info["torch"] = f"not importable: {e}"
    try:
        from nvidia import nvimgcodec

        info["nvimgcodec"] = f"{nvimgcodec.__version__} (CUDA {nvimgcodec.__cuda_version__})"
    except ImportError as e:
        info["nvimgcodec"] = f"not importable: {e}"
    try:
        import onnx

        info["onnx"] = onnx.__version__
    except ImportError as e:
        info["onnx"] = f"not importable: {e}"
    rows = "\n".join(f"| {key} | {_cell(value)} |" for key, value in info.items())
    return Result(table=f"| | |\n|---|---|\n{rows}", data=info)


def nvidia_smi(args: list[str]) -> str | None:
    """nvidia-smi's answer, stripped; None without one (a CPU machine) or when it fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _smi_cuda_version() -> str | None:
    found = re.search(r"CUDA Version:\s*([\d.]+)", nvidia_smi([]) or "")
    return found[1] if found else None


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return DASH
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return found[1].strip() if found else DASH


def _mem_total() -> int:
    found = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return int(found[1]) * 1024 if found else 0


def _package_of(module: Any) -> str:
    return str(Path(module.__file__).resolve().parent.parent)


def _cell(value: object) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text.replace("\n", "<br>").replace("|", "\\|")


# -- export ------------------------------------------------------------------------------------


def export(ctx: Context) -> Result:
    """Both precisions at once, each in its own process with half the cores."""
    result = Result(data={})
    threads = max(1, (os.cpu_count() or 2) // 2)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=spawn) as pool:
        futures = {
            p: pool.submit(_export_one, ctx.rehearse, p, str(ctx.work / "bundles" / p), threads)
            for p in PRECISIONS
        }
        for precision, future in futures.items():
            try:
                result.data[precision] = future.result()
            except Exception as e:  # the other precision still counts
                result.error(f"{precision} export failed: {type(e).__name__}: {e}")
    lines = [
        "| bundle | export s | model.onnx MB | explain.onnx MB | graph | max rel error | top-1 "
        "agreement | embedding cosine ≥ |",
        "|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for precision, e in result.data.items():
        for role, v in e["validation"].items():
            errors = ", ".join(f"{n} {x:.2g}" for n, x in v["max_rel"].items())
            top1 = DASH if v["top1"] is None else f"{v['top1']:.2%}"
            lines.append(
                f"| {precision} | {e['seconds']:.0f} | {e['mb']['fast']:.0f} | "
                f"{e['mb']['explain']:.0f} | {role} | {errors} | {top1} | {v['cosine']:.6f} |"
            )
    result.table = "\n".join(lines)
    result.note(
        f"{ctx.sizes.model}; both precisions exported at once, {threads} thread(s) each; "
        "the figures are vit-export's own check (ONNX Runtime's CPU provider)"
    )
    return result


def _export_one(rehearse: bool, precision: str, out: str, threads: int) -> dict[str, Any]:
    import torch

    from model_export.export.exporter import export_bundle

    torch.set_num_threads(threads)
    model, checksum = make_model(rehearse)
    started = time.perf_counter()
    manifest = export_bundle(
        model,
        Path(out),
        name=f"random-{'small' if rehearse else 'vit-b16'}",
        version="1",
        precision=precision,
        source_sha256="0" * 64,
        allow_untrained_head=True,
        force=True,
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "weights_checksum": checksum,
        "mb": {r: (Path(out) / g.file).stat().st_size / 1e6 for r, g in manifest.graphs.items()},
        "validation": {
            role: {
                "top1": v.top1_agreement,
                "cosine": v.embedding_cosine_min,
                "max_rel": {n: e.max_rel for n, e in v.outputs.items()},
            }
            for role, v in manifest.validation.items()
        },
    }


# -- 1. provider and parity ---------------------------------------------------------------------


def parity(ctx: Context) -> Result:
    import onnxruntime as ort
    import torch

    from model_export.export.check import (
        BATCH_SIZES,
        FP16_MIN_COSINE,
        FP16_MIN_TOP1,
        FP32_MAX_REL,
        FP32_NOISE_MULTIPLE,
        CheckFailed,
        check_pixels,
        compare,
        enforce,
        reference_input,
    )
    from model_export.export.exporter import PIXELS
    from model_export.export.graphs import ExplainGraph, FastGraph
    from model_export.preprocessing import bundle_preprocess
    from service.inference.engine import Engine, EngineError
    from service.inference.engine_io import CudaOptions
    from service.inference.gpu import why_no_cuda
    from vit_core.bundle import EXPLAIN, FAST, load_bundle

    result = Result(data={"providers": {}, "parity": []})
    folders = {p: ctx.bundle(p) for p in PRECISIONS}
    want = CPU if ctx.rehearse else CUDA
    # The service's own check first: Engine(providers=cuda) refuses a CPU fallback.
    provider_rows = []
    for precision, folder in folders.items():
        try:
            engine = Engine(folder, load_bundle(folder), ctx.providers, max_batch_size=8)
        except EngineError as e:
            result.error(f"{precision}: the engine refused VIT_PROVIDERS={ctx.providers}: {e}")
            continue
        placed = node_placement(folder / "model.onnx", want)
        result.data["providers"][precision] = {"engine": engine.providers, "nodes": placed}
        ok = engine.provider == want
        if not ok:
            result.error(
                f"{precision}: the engine runs on {engine.provider}, not {want}"
                + ("" if ctx.rehearse else f" ({why_no_cuda()})")
            )
        provider_rows.append(
            f"| {precision} | {', '.join(map(_short, engine.providers))} | "
            f"{_placement_cell(placed, want)} | {'yes' if ok else '**no**'} |"
        )
        del engine
        gc.collect()

    # The graphs against PyTorch on the same device: the exporter's pixels and gates.
    device = ctx.device
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the reference in true float32
        torch.backends.cudnn.allow_tf32 = False
    model, checksum = make_model(ctx.rehearse)
    config = model.config
    exported = _exported_checksums(ctx)
    if exported and any(abs(c - checksum) > 1e-6 * max(1.0, abs(checksum)) for c in exported):
        result.error(
            f"the model rebuilt here (checksum {checksum}) is not the exported one "
            f"({exported}): the parity figures compare different weights"
        )
    pixels = check_pixels(config, None, PIXELS)
    reference = reference_input(pixels, PIXELS, bundle_preprocess(config)).to(device)
    options = CudaOptions().provider_options()
    providers: list[Any] = [CPU] if ctx.rehearse else [(CUDA, options), CPU]
    parity_rows = []
    for role, wrap in ((FAST, FastGraph), (EXPLAIN, ExplainGraph)):
        module = wrap(model).eval().to(device)
        names = list(module.outputs)
        for precision, folder in folders.items():
            graph = folder / load_bundle(folder).graphs[role].file
            session = ort.InferenceSession(str(graph), providers=providers)
            got_provider = session.get_providers()[0]
            # The exporter's own comparison and gates, on this session's provider.
            v = compare(session, module, pixels, names, precision, reference)
            try:
                enforce(v, precision)
                failure = "" if got_provider == want else f"it ran on {got_provider}"
            except CheckFailed as e:
                failure = str(e)
            result.data["parity"].append(
                {"precision": precision, "graph": role, "session": session.get_providers(),
                 **v.model_dump(), "passed": not failure}
            )  # fmt: skip
            parity_rows.append(_parity_row(precision, role, got_provider, v, not failure))
            if failure:
                result.error(f"{precision} {role} on {got_provider}: parity failed: {failure}")
            del session
        del module
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    cuda_col = "" if not ctx.rehearse else " (rehearsal: the CPU provider; no CUDA here)"
    result.table = "\n".join(
        [
            f"| bundle | engine's providers (VIT_PROVIDERS={ctx.providers}) | fast graph's "
            f"nodes by provider (profiled, batch 8) | on {_short(want)}{cuda_col} |",
            "|---|---|---|---|",
            *provider_rows,
            "",
            f"| bundle | graph | ONNX Runtime on | max rel error vs PyTorch on {device} (fp32: "
            "its gate) | top-1 agreement | embedding cosine ≥ | rollout correlation ≥ | result |",
            "|---|---|---|---|---:|---:|---:|---|",
            *parity_rows,
        ]
    )
    result.note(
        f"{len(pixels)} check images (the exporter's: drawn shapes and noise) at batches "
        f"{BATCH_SIZES}; PyTorch float32 on {device} (TF32 off) is the reference, its "
        f"float64 run the noise that sets the fp32 gate (max rel ≤ max({FP32_MAX_REL:g}, "
        f"{FP32_NOISE_MULTIPLE:g} × that noise)); fp16 passes with top-1 ≥ {FP16_MIN_TOP1:.0%} "
        f"and cosine ≥ {FP16_MIN_COSINE} (vit-export's gates)"
    )
    return result


def _parity_row(precision: str, role: str, provider: str, v: Any, passed: bool) -> str:
    """One graph's row of the parity table, from its GraphValidation."""
    from vit_core.bundle import EMBEDDING, LOGITS, ROLLOUT

    shown = (LOGITS, EMBEDDING, ROLLOUT)
    errs = ", ".join(
        f"{n} {e.max_rel:.2g}" + (f" ({e.gate:.2g})" if e.gate is not None else "")
        for n, e in v.outputs.items()
        if n in shown
    )
    top1 = DASH if v.top1_agreement is None else f"{v.top1_agreement:.2%}"
    roll = DASH if v.rollout_correlation_min is None else f"{v.rollout_correlation_min:.4f}"
    return (
        f"| {precision} | {role} | {_short(provider)} | {errs} | {top1} | "
        f"{v.embedding_cosine_min:.6f} | {roll} | {'passed' if passed else '**FAILED**'} |"
    )


def _short(provider: str) -> str:
    return provider.removesuffix("ExecutionProvider")


def _exported_checksums(ctx: Context) -> list[float]:
    raw = ctx.work / "raw" / "export.json"
    if not raw.is_file():
        return []
    data = json.loads(raw.read_text()).get("data") or {}
    return [e["weights_checksum"] for e in data.values()]


def node_placement(graph: Path, want: str) -> dict[str, Any]:
    """Which provider ran each node of one run at batch 8 (ONNX Runtime's profile): a silent
    CPU fallback of some nodes shows here even when the session lists CUDA first."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(graph.parent.parent / f"profile-{graph.parent.name}")
    providers: list[Any] = [want] if want == CPU else [want, CPU]
    session = ort.InferenceSession(str(graph), options, providers=providers)
    spec = session.get_inputs()[0]
    x = np.zeros((8, *spec.shape[1:]), np.uint8)
    session.run(None, {spec.name: x})
    session.run(None, {spec.name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, int] = {}
    micros: dict[str, int] = {}
    for event in events:
        provider = event.get("args", {}).get("provider")
        if event.get("cat") == "Node" and provider and event["name"].endswith("_kernel_time"):
            nodes[provider] = nodes.get(provider, 0) + 1
            micros[provider] = micros.get(provider, 0) + int(event.get("dur", 0))
    return {"nodes": nodes, "microseconds": micros}


def _placement_cell(placed: dict[str, Any], want: str) -> str:
    nodes, micros = placed["nodes"], placed["microseconds"]
    total = sum(micros.values()) or 1
    parts = [
        f"{_short(p)} {n} ({micros[p] / total:.0%} of kernel time)"
        for p, n in sorted(nodes.items(), key=lambda kv: kv[0] != want)
    ]
    return ", ".join(parts) or DASH


# -- 2. engine throughput ----------------------------------------------------------------------


def engine(ctx: Context) -> Result:
    sizes = ctx.sizes
    result = Result(data=[])
    batches = list(sizes.engine_batches)
    head = " | ".join(f"batch {b}" for b in batches)
    lines = [
        f"| bundle | CUDA graphs | {head} | 2 lanes @ {max(batches)} | explain @ "
        f"{sizes.explain_batch} | GPU memory | resident (host) |",
        "|---|---|" + "---:|" * (len(batches) + 4),
    ]
    for precision in PRECISIONS:
        folder = ctx.bundle(precision)
        for graphs in (False, True):
            if graphs and ctx.rehearse:  # CUDA only
                cells = " | ".join([DASH] * (len(batches) + 4))
                lines.append(f"| {precision} | on | {cells} |")
                continue
            label = "on" if graphs else "off"
            try:
                row = _engine_row(ctx, folder, graphs)
            except Exception as err:  # the other rows still count
                result.error(f"{precision}, CUDA graphs {label}: {type(err).__name__}: {err}")
                row = {"fast": {}, "error": str(err)}
            gc.collect()
            row.update(precision=precision, cuda_graphs=graphs)
            result.data.append(row)
            cells = [f"{row['fast'][b]:.0f}" if b in row["fast"] else DASH for b in batches]
            cells.append(f"{row['two_lanes']:.0f}" if "two_lanes" in row else DASH)
            cells.append(f"{row['explain']:.0f}" if "explain" in row else DASH)
            cells.append(row.get("gpu_memory") or DASH)
            cells.append(f"{row['rss_mib']:.0f} MiB" if "rss_mib" in row else DASH)
            shown = "off (CPU)" if ctx.rehearse else label
            lines.append(f"| {precision} | {shown} | " + " | ".join(cells) + " |")
    result.table = "\n".join(lines)
    result.note(
        f"{sizes.model}; the service's Engine.run (pixels copied from its pinned batch "
        "buffer, outputs copied back): the best of ≥ 3 runs over "
        f"{sizes.engine_seconds:g} s per cell; 2 lanes: two batches in flight at once "
        "(VIT_ENGINE_LANES=2; Engine.measure, the best of two windows), against the batch "
        "column left of it: whether the GPU gains from a second lane; GPU memory is "
        "nvidia-smi's for this process after the row's runs"
    )
    return result


def _engine_row(ctx: Context, folder: Path, cuda_graphs: bool) -> dict[str, Any]:
    """One Engine as the service opens it: images/s of the fast graph at each batch size and of
    the explain graph at one, then the memory it holds."""
    import numpy as np

    from service.inference.engine import Engine
    from service.inference.engine_io import CudaOptions
    from vit_core.bundle import EXPLAIN, FAST, load_bundle

    sizes = ctx.sizes
    engine = Engine(
        folder,
        load_bundle(folder),
        ctx.providers,
        max_batch_size=max(sizes.engine_batches),
        cuda=CudaOptions(cuda_graphs=cuda_graphs),
        lanes=1 if cuda_graphs else 2,  # a CUDA graph replays one batch at a time
    )
    x = engine.host_rows(0)
    x[...] = np.random.default_rng(0).integers(0, 256, x.shape, dtype=np.uint8)
    row: dict[str, Any] = {"providers": engine.providers, "fast": {}}
    for b in sizes.engine_batches:
        row["fast"][b] = best_rate(lambda b=b: engine.run(FAST, x[:b]), b, sizes.engine_seconds)
    if len(engine.lanes) > 1:
        b = max(sizes.engine_batches)
        row["two_lanes"] = engine.measure([b], threading.Event(), sizes.engine_seconds)[b]
    b = sizes.explain_batch
    row["explain"] = best_rate(lambda: engine.run(EXPLAIN, x[:b]), b, sizes.engine_seconds)
    row["gpu_memory"] = gpu_memory()
    row["rss_mib"] = rss_mib(os.getpid())
    return row


def best_rate(work: Callable[[], object], images: int, seconds: float) -> float:
    """Images/s of the fastest run, after one untimed run (allocations, kernel choices, a CUDA
    graph's capture)."""
    work()
    fastest, runs, deadline = float("inf"), 0, time.perf_counter() + seconds
    while runs < 3 or time.perf_counter() < deadline:
        started = time.perf_counter()
        work()
        fastest = min(fastest, time.perf_counter() - started)
        runs += 1
    return images / fastest


def gpu_memory(pid: int | None = None) -> str | None:
    """This process's GPU memory as nvidia-smi reports it (the whole GPU's where it lists no
    processes, as in some virtual machines); None without nvidia-smi."""
    pid = pid or os.getpid()
    apps = nvidia_smi(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    for line in (apps or "").splitlines():
        found = [v.strip() for v in line.split(",")]
        if len(found) == 2 and found[0] == str(pid):
            return f"{found[1]} MiB"
    total = nvidia_smi(["--query-gpu=memory.used", "--format=csv,noheader,nounits"])
    return f"{total.splitlines()[0]} MiB (whole GPU)" if total else None


def rss_mib(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- 3. device decode --------------------------------------------------------------------------


def decode(ctx: Context) -> Result:
    from bench import device_decode
    from model_export.preprocessing import bundle_preprocess

    config = model_config(ctx.rehearse)
    sizes = ctx.sizes
    figures = device_decode.measure(
        ctx.device,
        bundle_preprocess(config),
        config.image_size,
        list(sizes.decode_batches),
        sizes.decode_seconds,
    )
    result = Result(table=device_decode.table(figures, cuda_columns=not ctx.rehearse), data=figures)
    pixels = figures["pixels"]
    if pixels["p99_9_abs"] > 1 or pixels["mean_abs"] > 0.05:
        result.error(f"the device decode's pixels differ from the host transform's: {pixels}")
    left = {b: r["left_to_host"] for b, r in figures["batches"].items() if r["left_to_host"]}
    if left:
        result.error(f"nvImageCodec left JPEGs to the host: {left} (batch: images)")
    result.note(
        "the test suite's bound (tests/service/test_device_decode.py): 99.9 % of pixels "
        "within 1 of 255, mean < 0.01"
    )
    return result


# -- the report --------------------------------------------------------------------------------


def report(work: Path, out: Path, rehearse: bool) -> None:
    """OUT/report.md and OUT/results.json from every step's raw JSON and gpu.sh's status file."""
    status = _status(work / "status.tsv")
    raw = {
        step: json.loads(p.read_text())
        for step in ORDER
        if (p := work / "raw" / f"{step}.json").is_file()
    }
    mode = "rehearsal on a CPU (bench/gpu.sh --rehearse)" if rehearse else "GPU (bench/gpu.sh)"
    lines = [
        f"# GPU benchmark report: {mode}",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; model: "
        f"{(REHEARSAL if rehearse else REAL).model}.",
        "",
        "## Summary",
        "",
        "| step | status | seconds | error (last line) |",
        "|---|---|---:|---|",
    ]
    for step in ORDER:
        s = status.get(step)
        if s is None:
            lines.append(f"| {step} | not run | | |")
            continue
        said = s["error"].strip().splitlines()
        firsts = [line for line in said if line.startswith("error: ")]
        last = (firsts or said or [""])[0 if firsts else -1]
        shown = "passed" if s["status"] == "passed" else f"**{s['status']}**"
        lines.append(f"| {step} | {shown} | {s['seconds']} | {_cell(last[:160])} |")
    for step in ORDER:
        lines += ["", f"## {TITLES[step]}", ""]
        found = raw.get(step)
        if found is None or not found.get("table"):
            why = status.get(step, {}).get("status", "not run")
            lines.append(f"{DASH} (no figures: the step {why}; see Errors)")
        else:
            lines.append(found["table"])
        for note in (found or {}).get("notes") or []:
            lines += ["", f"- {note}"]
    lines += ["", "## Errors", ""]
    errors = [(step, s["error"]) for step, s in status.items() if s["error"].strip()]
    if not errors:
        lines.append("none")
    for step, text in errors:
        lines += [f"### {step}", "", "```", text.strip(), "```", ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(
        json.dumps({"status": status, "steps": raw}, indent=1, default=str)
    )


def _status(path: Path) -> dict[str, dict[str, str]]:
    """gpu.sh's status file: one line per step, `step<TAB>status<TAB>seconds`, each step's error
    text beside it in WORK/errors/STEP.txt."""
    found: dict[str, dict[str, str]] = {}
    if not path.is_file():
        return found
    for line in path.read_text().splitlines():
        step, state, seconds = (line.split("\t") + ["", ""])[:3]
        error = path.parent / "errors" / f"{step}.txt"
        found[step] = {
            "status": state,
            "seconds": seconds,
            "error": error.read_text(errors="replace") if error.is_file() else "",
        }
    return found


# -- the command -------------------------------------------------------------------------------


def http(ctx: Context) -> Result:
    """4. through HTTP: bench/gpu_http.py."""
    from bench import gpu_http

    return gpu_http.http(ctx)


STEPS: dict[str, Callable[[Context], Result]] = {
    "install": install,
    "machine": machine,
    "export": export,
    "parity": parity,
    "engine": engine,
    "decode": decode,
    "http": http,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("step", choices=[*STEPS, "report"])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, help="report: where report.md and results.json go")
    p.add_argument("--rehearse", action="store_true")
    p.add_argument("--wheels", type=Path, default=Path("/tmp/vit-wheels"))
    args = p.parse_args(argv)
    if args.step == "report":
        report(args.work, args.out or args.work, args.rehearse)
        return 0
    # timeout(1)'s SIGTERM: unwind, so that servers and pools started here are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx = Context(args.work, args.rehearse, args.wheels)
    (args.work / "raw").mkdir(parents=True, exist_ok=True)
    try:
        result = STEPS[args.step](ctx)
    except Exception as e:
        traceback.print_exc()
        result = Result(errors=[f"{type(e).__name__}: {e}"])
    (args.work / "raw" / f"{args.step}.json").write_text(
        json.dumps(asdict(result), indent=1, default=str)
    )
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
