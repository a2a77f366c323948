"""Load benchmark: the service against its own ceiling and the servers a user would compare it
with, over loopback HTTP.

    python bench/load.py [--bundle models/demo] [--seconds 15] [--rounds 2]
                         [--concurrency 1 8 32] [--overload-seconds 15] [--json results.json]
                         [--litserve-python PYTHON] [--variant "1 lane=--engine-lanes=1"]
                         [--baseline]

First the front-end capacity (bench/frontend.py: images/s per server core with a model that costs
nothing). Then closed-loop clients (bench/rawload.py: raw keep-alive HTTP/1.1, prebuilt requests)
post realistic 640×480 JPEGs to /classify, `concurrency` at a time, for a bounded time. Compared:

    in-process  bench/inprocess.py: the same decode, preprocess, inference; no HTTP (ceiling)
    service     vit-serve as it ships (lanes, batch size and max_wait_ms its defaults)
    naive       bench/naive_server.py: one ONNX Runtime call per request
    litserve    bench/litserve_server.py (with --litserve-python, an interpreter that has it):
                LitServe's batching (up to 8, 5 ms), its worker process, multipart uploads
    NAME        (--variant NAME=FLAGS) the service with vit-serve flags, comma-separated: a
                setting tried beside the default (the bench clears VIT_* from the servers)
    baseline    (--baseline) the service before the engine/front split (bench/servers.BASELINE,
                checked out beside this one), with the same decode as the others

Every server decodes as the service does by default (the scaled JPEG decode), so the comparison
is about serving. All servers stay up through the run, and each round runs every system once in a
rotating order, so that a machine shared with other work loads them alike; rounds are pooled.
Then an open-loop run offers 4× the service's measured capacity: the service answers the excess
with fast 429s, the naive server queues without bound. Without --bundle: a random ViT-Ti/16 at
224 px exported once into the temp dir. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bench.frontend import capacity as front_end  # noqa: E402
from bench.frontend import capacity_table  # noqa: E402
from bench.overload import Overload, open_loop, overload_table  # noqa: E402
from bench.pictures import photos  # noqa: E402
from bench.rawload import Capacity, measure, post  # noqa: E402
from bench.servers import (  # noqa: E402
    BASELINE,
    baseline_bundle,
    baseline_command,
    featherweight,
    free_port,
    litserve_command,
    naive_command,
    service_command,
    serving,
    vit_ti16,
    worktree,
)

MAX_WAIT_MS = 5.0
QUEUE = 64  # max_queue_images for the service here: ~4 s of work on a 2-core CPU (256 suits a GPU)
LITSERVE_BATCH = 8  # LitServe's examples batch 4-16; the service measures 4-8 here


@dataclass
class Sample:
    """One measured run: the latencies (s) of its successful requests, in a window (s)."""

    latencies: list[float]
    window: float
    errors: int = 0


@dataclass
class Stats:
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    n: int
    errors: int = 0


# -- load generation ---------------------------------------------------------------------------


def closed_loop(url: str, requests: list[bytes], concurrency: int, seconds: float,
                warmup: float) -> Sample:  # fmt: skip
    """`concurrency` keep-alive connections, each posting its next image as soon as the last is
    answered (bench/rawload.py: a lean client, which leaves the shared cores to the server)."""
    port = int(url.rsplit(":", 1)[1])
    run = measure(port, [], requests, concurrency, seconds, warmup)
    return Sample(run.latencies, run.window, run.errors)


def combine(samples: list[Sample]) -> Stats:
    """Rounds pooled: images over the total window, percentiles over every latency."""
    latencies = np.array([x for s in samples for x in s.latencies]) * 1000
    window, errors = sum(s.window for s in samples), sum(s.errors for s in samples)
    if not len(latencies):
        return Stats(0.0, float("nan"), float("nan"), float("nan"), 0, errors)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return Stats(
        len(latencies) / window, float(p50), float(p95), float(p99), len(latencies), errors
    )


# -- the systems under test ------------------------------------------------------------------


@contextmanager
def servers(
    bundle: Path, litserve_python: str | None, variants: list[str], baseline: bool
) -> Iterator[dict[str, str]]:
    """The HTTP systems, up and warm, for the whole run."""
    commands = {
        "service": service_command(bundle, free_port(), None, None, QUEUE),
        "naive": naive_command(bundle, free_port()),
    }
    for variant in variants:
        name, _, flags = variant.partition("=")
        commands[name] = service_command(
            bundle, free_port(), None, None, QUEUE, *filter(None, flags.split(","))
        )
    if litserve_python:
        commands["litserve"] = litserve_command(
            litserve_python, bundle, free_port(), LITSERVE_BATCH, MAX_WAIT_MS
        )
    with ExitStack() as stack:
        if baseline:
            old = stack.enter_context(worktree(BASELINE))
            before = service_command(baseline_bundle(old, "vit_ti16"), free_port(), None,
                                     MAX_WAIT_MS, QUEUE, "--exact-decode=false")  # fmt: skip
            commands["baseline"] = baseline_command(old, before)
        running = stack.enter_context(serving(commands))
        yield running.urls


def bodies(images: list[bytes]) -> dict[str, list[bytes]]:
    """Per system, the requests it reads: the raw JPEG, or (LitServe) a one-file upload."""
    raw = [post("/classify", image, "image/jpeg") for image in images]
    boundary = "vit-bench-boundary"
    uploads = [
        post("/classify", b"".join([
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{i}.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n".encode(),
            image, f"\r\n--{boundary}--\r\n".encode(),
        ]), f"multipart/form-data; boundary={boundary}")
        for i, image in enumerate(images)
    ]  # fmt: skip
    return defaultdict(lambda: raw, litserve=uploads)  # every other system reads the raw JPEG


def ceiling(bundle: Path, concurrency: int, seconds: float, warmup: float) -> Sample:
    """bench/inprocess.py in its own process, so nothing else shares its interpreter."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "inprocess.py"), f"--bundle={bundle}",
         f"--concurrency={concurrency}", f"--seconds={seconds}", f"--warmup={warmup}"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    return Sample(result["latencies"], result["window"])


# -- report ------------------------------------------------------------------------------------


def table(rows: dict[tuple[str, int], Stats]) -> str:
    lines = [
        "| system | concurrency | images/s | p50 ms | p95 ms | p99 ms | of ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, c), s in rows.items():
        top = rows.get(("in-process", c))
        ratio = f"{s.images_per_s / top.images_per_s:.0%}" if top and top.images_per_s else ""
        errors = f" ({s.errors} errors)" if s.errors else ""
        lines.append(
            f"| {name}{errors} | {c} | {s.images_per_s:.1f} | {s.p50_ms:.0f} | {s.p95_ms:.0f} | "
            f"{s.p99_ms:.0f} | {ratio} |"
        )
    return "\n".join(lines)


def targets(rows: dict[tuple[str, int], Stats]) -> list[str]:
    """The issue's targets, each with its figure and whether it is met."""
    lines = []

    def check(ok: bool, text: str) -> None:
        lines.append(f"{'met' if ok else 'NOT met'}: {text}")

    for c in (8, 32):
        if not all((n, c) in rows for n in ("service", "in-process", "naive")):
            continue
        s, top, naive = rows["service", c], rows["in-process", c], rows["naive", c]
        check(
            s.images_per_s >= 0.95 * top.images_per_s,
            f"c={c}: service at {s.images_per_s / top.images_per_s:.0%} of the ceiling (>= 95%)",
        )
        check(
            s.images_per_s >= 1.2 * naive.images_per_s,
            f"c={c}: service at {s.images_per_s / naive.images_per_s:.2f}x naive (>= 1.2x)",
        )
        check(
            s.p99_ms <= 2 * s.p50_ms, f"c={c}: service p99/p50 = {s.p99_ms / s.p50_ms:.2f} (<= 2)"
        )
        if ("litserve", c) in rows:
            lit = rows["litserve", c]
            check(
                s.images_per_s >= lit.images_per_s,
                f"c={c}: service at {s.images_per_s / lit.images_per_s:.2f}x LitServe (>= 1x)",
            )
    if ("service", 1) in rows and ("naive", 1) in rows:
        s, naive = rows["service", 1], rows["naive", 1]
        check(
            s.p50_ms <= naive.p50_ms,
            f"c=1: service p50 {s.p50_ms:.1f} ms, naive {naive.p50_ms:.1f} ms (no worse)",
        )
    return lines  # fmt: skip


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; onnxruntime {ort.__version__}; python "
        f"{platform.python_version()}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, help="default: a random ViT-Ti/16 at 224 px")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=15, help="measured time per run")
    p.add_argument("--warmup", type=float, default=4, help="unmeasured lead-in per run")
    p.add_argument("--rounds", type=int, default=2, help="runs per system and concurrency")
    p.add_argument("--frontend-seconds", type=float, default=10, help="0 skips the front end")
    p.add_argument("--frontend-connections", type=int, default=16)
    p.add_argument("--overload-seconds", type=float, default=15, help="0 skips the overload run")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--litserve-python", help="an interpreter with LitServe: compare with it too")
    p.add_argument("--variant", action="append", default=[],
                   help='NAME=FLAGS: the service with these vit-serve flags too, e.g. '
                   '"1 lane=--engine-lanes=1"')  # fmt: skip
    p.add_argument(
        "--baseline",
        action="store_true",
        help=f"the service before the split ({BASELINE}) too, with the same decode",
    )
    args = p.parse_args()
    bundle = args.bundle or vit_ti16()
    images = photos(64)
    requests = bodies(images)
    print(f"bundle {bundle}; {machine()}", flush=True)
    front: dict[str, Capacity] = {}
    processes: dict[str, dict[int, str]] = {}
    if args.frontend_seconds:  # without the baseline: bench/frontend.py runs that too
        front, processes = front_end(
            args.frontend_connections, args.frontend_seconds, args.rounds, None
        )

    samples: dict[tuple[str, int], list[Sample]] = defaultdict(list)
    overloads: dict[str, Overload] = {}
    with servers(bundle, args.litserve_python, args.variant, args.baseline) as urls:
        systems = ["in-process", *urls]
        for c in args.concurrency:
            for r in range(args.rounds):
                turn = r % len(systems)
                for name in systems[turn:] + systems[:turn]:  # rotate who goes first
                    if name == "in-process":
                        sample = ceiling(bundle, c, args.seconds, args.warmup)
                    else:
                        sample = closed_loop(
                            urls[name], requests[name], c, args.seconds, args.warmup
                        )
                    samples[name, c].append(sample)
                    print(f"{name} c={c} round {r}: {combine([sample])}", flush=True)
        if args.overload_seconds:
            capacity = max(combine(samples["service", c]).images_per_s for c in args.concurrency)
            for name in ("service", "naive"):  # the naive one last: it leaves a backlog behind
                run_open = open_loop(urls[name], images, 4 * capacity, args.overload_seconds)
                overloads[name] = asyncio.run(run_open)
                print(f"{name} overload: {overloads[name]}", flush=True)

    rows = {(n, c): combine(samples[n, c]) for n in systems for c in args.concurrency}
    print(f"\n{machine()}")
    if front:
        print(f"\n## Front-end capacity: {featherweight().name}\n")
        print(capacity_table(front, processes, args.frontend_connections))
    print(f"\n## Load: {bundle.name}\n\n{table(rows)}\n")
    for line in targets(rows):
        print(f"- {line}")
    if overloads:
        print(f"\n## Overload: 4x the service's capacity for {args.overload_seconds:.0f} s\n")
        print(overload_table(overloads))
    if args.json:
        payload = {
            "bundle": str(bundle),
            "machine": machine(),
            "frontend": {n: {**asdict(c), "latencies": None} for n, c in front.items()},
            "load": [{"system": n, "concurrency": c, **asdict(s)} for (n, c), s in rows.items()],
            "overload": {n: asdict(o) for n, o in overloads.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
