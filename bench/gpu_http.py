"""Step 4 of bench/gpu.sh: vit-serve under closed-loop load from the same machine, and what
limits it.

The real `vit-serve` (the install step's, first on PATH) serves the fp16 bundle with its fronts,
--providers cuda (cpu in the rehearsal) and --decode device. Load processes (bench/rawload.py's
closed loop, on uvloop where it is installed) post 640×480 JPEGs, one a request or 32 a request
(multipart), for a warm-up and then a measured window. Over the same window: the CPU of each
process of the instance (their pids from /metrics), the busiest threads of the engine, and the
GPU's utilisation and memory sampled by nvidia-smi every 200 ms. `bottleneck` names what limits
the run from those figures. The server's own output is kept, and decode errors in it (nvImageCodec
falling back to the host, or worse) fail the step.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.gpu_steps import CUDA, DASH, GOAL, Context, Result, Sizes, StepError


def http(ctx: Context) -> Result:
    from bench.pictures import photos
    from bench.rawload import post
    from bench.servers import free_port

    sizes = ctx.sizes
    result = Result(data={"runs": []})
    bundle = ctx.bundle("fp16")
    port = free_port()
    queue = 2 * max(max(c) * n for n, c in sizes.connections.items())  # room for every image
    command = [
        *vit_serve(),
        f"--bundle={bundle}",
        f"--port={port}",
        f"--workers={sizes.fronts}",
        f"--providers={ctx.providers}",
        "--decode=device",
        f"--max-queue-images={queue}",
        "--max-concurrent-requests=4096",
        "--max-connections=4096",
        "--drain-delay-s=0",
        "--log-level=warning",
    ]
    result.data["command"] = command
    images = photos(64)
    bodies = {1: [post("/classify", image, "image/jpeg") for image in images]}
    bodies.update(
        {
            n: [multipart("/classify", (images * 2)[i : i + n]) for i in range(0, 64, 8)]
            for n in sizes.connections
            if n > 1
        }
    )
    try:
        serve_and_load(ctx, result, command, port, bodies)
    except Exception as e:  # the server did not start, or stopped: what was measured still counts
        result.error(f"{type(e).__name__}: {e}")
    result.table = http_tables(result.data, sizes)
    said = result.data.get("engine", {})
    result.notes = [
        f"{sizes.model}, fp16 bundle; vit-serve with {sizes.fronts} fronts, "
        f"--providers={ctx.providers} --decode=device, fronts on asyncio's loop as in the image; "
        f"the engine runs on {said.get('providers')}, batch size {said.get('max_batch_size')} "
        f"chosen from images/s by size {said.get('batch_size_measured')}; ready "
        f"{result.data.get('ready_s', float('nan')):.0f} s after start (warm-up included); "
        f"{sizes.load_processes} load process(es), closed loop, {sizes.load_warmup:g} s warm-up "
        f"then {sizes.load_seconds:g} s measured per row",
        *(result.notes or []),
    ]
    best = max((r["images_per_s"] for r in result.data["runs"]), default=0.0)
    if not ctx.rehearse:
        verdict = "met" if best >= GOAL else "not met"
        result.note(f"the goal line, {GOAL:,} images/s through HTTP: {verdict} (best {best:,.0f})")
    if not result.data["runs"]:
        result.error("no load run finished")
    return result


def serve_and_load(
    ctx: Context, result: Result, command: list[str], port: int, bodies: dict[int, list[bytes]]
) -> None:
    """vit-serve started and ready, then each load run in turn; the figures into `result`."""
    import httpx

    from bench.servers import serving

    sizes = ctx.sizes
    started = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")
    server_log = ctx.work / "logs" / "vit-serve.log"
    with contextlib.ExitStack() as stack:
        stack.callback(_server_said, result, server_log)  # once the server has stopped
        with output_to(server_log):  # what the server inherits
            running = stack.enter_context(serving({"vit-serve": command}, sizes.ready_timeout))
        clients = stack.enter_context(spawn.Pool(sizes.load_processes))
        url = running.urls["vit-serve"]
        result.data["ready_s"] = time.perf_counter() - started
        model = httpx.get(f"{url}/model", timeout=10).json()
        batching = model.get("batching") or {}
        result.data["engine"] = {
            "precision": model.get("precision"),
            "providers": model.get("providers"),
            "decode": model.get("decode"),
            "max_batch_size": batching.get("max_batch_size"),
            "batch_size_measured": batching.get("batch_size_measured"),
        }
        _check_serving(ctx, result, url, bodies)
        pids = instance_pids(url)
        result.data["pids"] = pids
        for per_request, counts in sizes.connections.items():
            for connections in counts:
                try:
                    run_ = load(
                        clients, port, bodies[per_request], per_request, connections, pids, sizes
                    )
                except Exception as e:  # the other loads still count
                    result.error(
                        f"{per_request} image(s)/request, {connections} connections: "
                        f"{type(e).__name__}: {e}"
                    )
                    continue
                result.data["runs"].append(run_)
                print(
                    f"  http: {per_request}/request × {connections}: "
                    f"{run_['images_per_s']:.0f} images/s, {run_['bottleneck']}",
                    flush=True,
                )


# What nvImageCodec and the C library print when a decode goes wrong: the image then falls back
# to the host transform (or the engine dies), which the figures alone would not show.
_DECODE_TROUBLE = re.compile(
    r"\[ERROR\].*\[nvimgcodec\]|\[pynvimgcodec\] Something went wrong|double free|corrupted"
)


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """This process's stdout and stderr go to `path` during the block, so that what a process
    started in it inherits (and prints for its whole life) can be read afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy_ in zip((1, 2), saved, strict=True):
            os.dup2(copy_, fd)
            os.close(copy_)


def _server_said(result: Result, log: Path) -> None:
    """The server's output into the step's log, and its decode errors into the step's."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    print(f"--- vit-serve's output ({log}) ---\n{text}--- end of vit-serve's output ---")
    trouble = [line for line in text.splitlines() if _DECODE_TROUBLE.search(line)]
    if trouble:
        result.error(
            f"vit-serve printed {len(trouble)} decode error line(s) under load (each an "
            f"image decoded again on the host, or worse), e.g. {trouble[0].strip()!r}"
        )


def vit_serve() -> list[str]:
    """The installed vit-serve (the install step's, first on PATH), else the module."""
    found = shutil.which("vit-serve")
    return [found] if found else [sys.executable, "-m", "service.cli"]


def multipart(path: str, images: list[bytes]) -> bytes:
    boundary = "vitbenchboundary7d1f"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{i}.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + data
        + b"\r\n"
        for i, data in enumerate(images)
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    from bench.rawload import post

    return post(path, body, f"multipart/form-data; boundary={boundary}")


def _check_serving(ctx: Context, result: Result, url: str, bodies: dict[int, list[bytes]]) -> None:
    """One request of each kind answers 200 with as many results as images, and the engine
    decodes on the device where the model runs."""
    import httpx

    engine_info = result.data["engine"]
    want = "device (cpu)" if ctx.rehearse else "device (cuda)"
    if engine_info["decode"] != want:
        result.error(f"the engine decodes with {engine_info['decode']}, not {want}")
    providers = engine_info.get("providers") or []
    if not ctx.rehearse and (not providers or providers[0] != CUDA):
        result.error(f"the engine runs on {providers}, not CUDA first")
    for n, requests in bodies.items():
        head, _, body = requests[0].partition(b"\r\n\r\n")
        content_type = re.search(rb"Content-Type: ([^\r]+)", head)
        assert content_type is not None
        answer = httpx.post(
            f"{url}/classify",
            content=body,
            timeout=60,
            headers={"Content-Type": content_type[1].decode()},
        )
        if answer.status_code != 200:
            raise StepError(f"{n} image(s)/request: {answer.status_code} {answer.text[:300]}")


_PROCESS = re.compile(
    r'^vit_process_cpu_seconds_total\{(?=[^}]*process="([^"]+)")(?=[^}]*pid="(\d+)")'
)


def instance_pids(url: str) -> dict[str, int]:
    """The instance's processes by name, from /metrics' vit_process_cpu_seconds_total."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    pids = {m[1]: int(m[2]) for line in text.splitlines() if (m := _PROCESS.match(line))}
    if not pids:
        raise StepError("/metrics names no process (vit_process_cpu_seconds_total)")
    return dict(sorted(pids.items(), key=lambda kv: _process_order(kv[0])))


def _process_order(name: str) -> tuple[int, int]:
    if name.startswith("front-"):
        return (2, int(name.split("-")[1]))
    return ({"supervisor": 0, "engine": 1}.get(name, 3), 0)


class GpuSampler:
    """nvidia-smi every 200 ms while the window lasts: utilisation (%) and memory used (MiB)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._process = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "200",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        self._process.terminate()
        out, _ = self._process.communicate(timeout=10)
        for line in out.splitlines():
            try:
                util, mem = (float(v) for v in line.split(","))
            except ValueError:
                continue
            self.samples.append((util, mem))

    @property
    def available(self) -> bool:
        return self._process is not None


def _client(
    port: int,
    requests: list[bytes],
    connections: int,
    seconds: float,
    warmup: float,
    start_at: float,
) -> dict[str, Any]:
    """One load process: closed loop from `start_at` (wall clock), uvloop where installed."""
    import asyncio

    from bench.rawload import measure

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    time.sleep(max(0.0, start_at - time.time()))
    c = measure(port, [], requests, connections, seconds, warmup)
    return {
        "pid": os.getpid(),
        "requests_per_s": c.images_per_s,
        "client_cores": c.client_cores,
        "errors": c.errors,
        "latencies": c.latencies,
        "window": c.window,
    }


def load(
    clients: Any,
    port: int,
    requests: list[bytes],
    per_request: int,
    connections: int,
    pids: dict[str, int],
    sizes: Sizes,
) -> dict[str, Any]:
    """One closed-loop run: the clients' figures, each process's CPU and the busiest threads of
    the engine over the same window, GPU utilisation, and what the bottleneck is."""
    from bench.rawload import thread_cpu

    n = sizes.load_processes
    shares = [connections // n + (1 if k < connections % n else 0) for k in range(n)]
    start_at = time.time() + 1.0
    pending = clients.starmap_async(
        _client,
        [
            (port, requests, share, sizes.load_seconds, sizes.load_warmup, start_at)
            for share in shares
            if share
        ],
    )
    time.sleep(max(0.0, start_at + sizes.load_warmup - time.time()))
    engine_pid = pids.get("engine")
    with GpuSampler() as gpu:
        begin = time.perf_counter()
        before = cpu_by_name(pids)
        threads0 = thread_cpu(engine_pid) if engine_pid else {}
        time.sleep(sizes.load_seconds)
        after = cpu_by_name(pids)
        threads1 = thread_cpu(engine_pid) if engine_pid else {}
        window = time.perf_counter() - begin
    answers = pending.get(timeout=sizes.load_seconds + sizes.load_warmup + 120)
    latencies = sorted(lat for a in answers for lat in a["latencies"])
    requests_per_s = sum(a["requests_per_s"] for a in answers)
    cores = {name: (after[name] - before[name]) / window for name in pids}
    threads = sorted(
        ((t, (threads1[t] - threads0.get(t, 0.0)) / window) for t in threads1),
        key=lambda kv: -kv[1],
    )[:4]
    utils = [u for u, _ in gpu.samples]
    run_ = {
        "images_per_request": per_request,
        "connections": connections,
        "images_per_s": requests_per_s * per_request,
        "requests_per_s": requests_per_s,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "errors": sum(a["errors"] for a in answers),
        "cores": cores,
        "engine_threads": threads,
        "clients": [{"pid": a["pid"], "cores": a["client_cores"]} for a in answers],
        "gpu_util_mean": sum(utils) / len(utils) if utils else None,
        "gpu_util_max": max(utils) if utils else None,
        "gpu_memory_max_mib": max((m for _, m in gpu.samples), default=None),
        "gpu_sampled": gpu.available,
    }
    run_["bottleneck"] = bottleneck(run_)
    return run_


def cpu_by_name(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each process of the instance; StepError once one is gone."""
    from bench.rawload import cpu_seconds

    found = {}
    for name, pid in pids.items():
        try:
            found[name] = cpu_seconds(pid)
        except FileNotFoundError:
            raise StepError(
                f"the {name} process (pid {pid}) is gone: the instance stopped"
            ) from None
    return found


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def bottleneck(r: dict[str, Any], cpus: int | None = None) -> str:
    """What limits this run, from the figures: a GPU busy all the time, a thread or process on a
    full core, or every core of the machine (`cpus`, this one's by default)."""
    cpus = cpus or os.cpu_count() or 1
    util = r["gpu_util_mean"]
    if util is not None and util >= 90:
        return f"the GPU ({util:.0f} % busy)"
    cores = r["cores"]
    fronts = [c for name, c in cores.items() if name.startswith("front-")]
    clients = [c["cores"] for c in r["clients"]]
    total = sum(cores.values()) + sum(clients)
    found = []
    if r["engine_threads"] and r["engine_threads"][0][1] >= 0.9:
        name, c = r["engine_threads"][0]
        found.append(f"one thread of the engine ({name}: {c:.2f} cores)")
    if fronts and sum(fronts) / len(fronts) >= 0.85:
        found.append(f"the fronts ({sum(fronts) / len(fronts):.2f} cores each)")
    elif fronts and max(fronts) >= 0.9:
        found.append(f"one front ({max(fronts):.2f} cores; the others {min(fronts):.2f}+)")
    if clients and max(clients) >= 0.9:
        found.append(f"the load generator ({max(clients):.2f} cores a process)")
    if total >= 0.9 * cpus:
        found.append(f"the machine's CPUs ({total:.1f} of {cpus} cores busy)")
    if found:
        return "; ".join(found)
    gpu = "" if util is None else f", GPU {util:.0f} % busy"
    return f"nothing saturated ({total:.1f} of {cpus} cores{gpu}): latency-bound, more load needed"


def http_tables(data: dict[str, Any], sizes: Sizes) -> str:
    runs = data["runs"]
    lines = [
        "| images/request | connections | images/s | requests/s | p50 ms | p99 ms | errors | "
        "engine cores (its busiest thread) | fronts: cores each (max) | load generator cores | "
        "GPU util mean / max | bottleneck |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|---|",
    ]
    for r in runs:
        cores = r["cores"]
        fronts = [c for name, c in cores.items() if name.startswith("front-")]
        top = r["engine_threads"][0][1] if r["engine_threads"] else 0.0
        util = (
            f"{r['gpu_util_mean']:.0f} % / {r['gpu_util_max']:.0f} %"
            if r["gpu_util_mean"] is not None
            else f"{DASH} (no nvidia-smi)"
        )
        front_cell = f"{sum(fronts) / len(fronts):.2f} ({max(fronts):.2f})" if fronts else DASH
        lines.append(
            f"| {r['images_per_request']} | {r['connections']} | {r['images_per_s']:.0f} | "
            f"{r['requests_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | "
            f"{cores.get('engine', 0.0):.2f} ({top:.2f}) | "
            f"{front_cell} | {sum(c['cores'] for c in r['clients']):.2f} | {util} | "
            f"{r['bottleneck']} |"
        )
    if not runs:
        return "\n".join(lines)
    names = list(runs[0]["cores"])
    heads = " | ".join(f"{r['images_per_request']}×{r['connections']}" for r in runs)
    lines += [
        "",
        f"| process: CPU cores over the window (images/request × connections) | {heads} |",
        "|---|" + "---:|" * len(runs),
    ]
    for name in names:
        lines.append(
            f"| {name} | " + " | ".join(f"{r['cores'].get(name, 0.0):.2f}" for r in runs) + " |"
        )
    lines.append(
        "| load generator (all processes) | "
        + " | ".join(f"{sum(c['cores'] for c in r['clients']):.2f}" for r in runs)
        + " |"
    )
    lines.append(
        "| engine's three busiest threads | "
        + " | ".join(
            ", ".join(f"{t.split('/')[0]} {c:.2f}" for t, c in r["engine_threads"][:3])
            for r in runs
        )
        + " |"
    )
    return "\n".join(lines)
