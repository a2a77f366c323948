"""Front-end capacity: what the whole instance pushes through HTTP when the model costs nothing.

    python bench/frontend.py [--connections 16] [--seconds 10] [--rounds 2] [--baseline REV]

A 1-block, D=32 ViT at 224 px (exported once into the temp dir) behind: the service (a front and
the engine), the service with two fronts, with h11's pure-Python parser instead of httptools (its
CPU per request in the front), with the exact decode (VIT_EXACT_DECODE=true), the naive
one-call-per-request FastAPI server, and the service as it was at git revision --baseline
(checked out into a temp worktree and run from there, on a bundle its own exporter wrote:
"today's default" measured in the same run); 640×480 JPEGs posted raw to /classify, one per
request, by bench/rawload.py, each system measured --rounds times in a rotating order (the best
round is kept: other work on a shared machine only ever lowers it).

Per system: images/s, the server's CPU over the window (cores, every process of it), images/s
per server core (the figure that says how many cores would feed a GPU), and for the service the
split: the fronts' CPU per request and the engine's per image (µs), from /proc; then the engine's
per image by thread (its event loop, decode threads, lanes and ONNX Runtime's own threads, by the
names the service gives them).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.pictures import photos  # noqa: E402
from bench.rawload import Capacity, by_role, measure, post  # noqa: E402
from bench.servers import (  # noqa: E402
    BASELINE,
    baseline_bundle,
    baseline_command,
    featherweight,
    free_port,
    naive_command,
    port_of,
    service_command,
    serving,
    worktree,
)

QUEUE = 256


def commands(bundle: Path, baseline: Path | None) -> dict[str, list[str]]:
    found = {
        "service": service_command(bundle, free_port(), 32, 5, QUEUE),
        "service, 2 fronts": service_command(bundle, free_port(), 32, 5, QUEUE, "--workers=2"),
        "service, h11": service_command(bundle, free_port(), 32, 5, QUEUE, "--http=h11"),
        "service, exact decode": service_command(
            bundle, free_port(), 32, 5, QUEUE, "--exact-decode=true"
        ),
        "naive": naive_command(bundle, free_port()),
    }
    if baseline is not None:
        old = service_command(baseline_bundle(baseline, "featherweight"), free_port(), 32, 5, QUEUE)
        found["baseline"] = baseline_command(baseline, old)
    return found


def capacity(
    connections: int, seconds: float, rounds: int, baseline: Path | None
) -> tuple[dict[str, Capacity], dict[str, dict[int, str]]]:
    """Every system measured `rounds` times in a rotating order; per system the round with the
    most images per server core. Also each system's processes by name."""
    bundle = featherweight()
    systems = commands(bundle, baseline)
    requests = [post("/classify", image, "image/jpeg") for image in photos(64)]
    runs: dict[str, list[Capacity]] = defaultdict(list)
    names: dict[str, dict[int, str]] = {}
    with serving(systems) as running:
        for name in systems:
            names[name] = processes(running.urls[name], running.pids[name])
        order = list(systems)
        for r in range(rounds):
            for name in order[r % len(order) :] + order[: r % len(order)]:
                pids = list(names[name])
                run = measure(port_of(systems[name]), pids, requests, connections, seconds)
                print(f"front end, {name}, round {r}: {run}", flush=True)
                runs[name].append(run)
    return {name: max(rs, key=lambda c: c.per_core) for name, rs in runs.items()}, names


def processes(url: str, pid: int) -> dict[int, str]:
    """A server's processes, pid → name: the instance's own account (vit_process_* in
    /metrics), else the process and its children."""
    answer = httpx.get(f"{url}/metrics", timeout=10)
    text = answer.text if answer.status_code == 200 else ""  # the naive server has none
    found = {
        int(s.labels["pid"]): s.labels["process"]
        for family in text_string_to_metric_families(text)
        if family.name == "vit_process_resident_memory_bytes"
        for s in family.samples
    }
    if found:
        return found
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return {pid: "server", **{k: f"child-{k}" for k in kids}}


def capacity_table(
    rows: dict[str, Capacity], names: dict[str, dict[int, str]], connections: int
) -> str:
    naive, base = rows.get("naive"), rows.get("baseline")
    lines = [
        "| system | images/s | server cores | images/s per core | ÷ naive | ÷ baseline | "
        "fronts: µs CPU per request | engine: µs CPU per image | p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in rows.items():
        by_name = {names[name].get(pid, "?"): cores for pid, cores in c.cores.items()}
        fronts = sum(cores for n, cores in by_name.items() if n.startswith("front"))
        engine = by_name.get("engine", 0.0)
        split = (
            (f"{1e6 * fronts / c.images_per_s:.0f}", f"{1e6 * engine / c.images_per_s:.0f}")
            if "engine" in by_name and c.images_per_s
            else ("", "")
        )
        ratio = f"{c.per_core / naive.per_core:.2f}×" if naive else ""
        over_base = f"{c.per_core / base.per_core:.2f}×" if base else ""
        errors = f" ({c.errors} errors)" if c.errors else ""
        lines.append(
            f"| {name}{errors} | {c.images_per_s:.0f} | {c.server_cores:.2f} | "
            f"**{c.per_core:.0f}** | {ratio} | {over_base} | {split[0]} | {split[1]} | "
            f"{c.p50_ms:.1f} |"
        )
    return f"{connections} connections, one 640×480 JPEG per request\n\n" + "\n".join(lines)


# The engine's threads by role (service/os_names.py names them), in the order an image meets them
ROLES = {
    "vit-engine": "event loop",
    "decode": "decode threads",
    "batcher": "lanes",
    "onnxruntime": "ONNX Runtime's threads",
}


def threads_table(rows: dict[str, Capacity], names: dict[str, dict[int, str]]) -> str:
    """Per system with an engine: the engine's CPU per image, by thread role (µs)."""
    lines = [
        "| system | " + " | ".join(ROLES.values()) + " | other | engine |",
        "|---|" + "---:|" * (len(ROLES) + 2),
    ]
    for name, c in rows.items():
        engine = next((pid for pid, n in names[name].items() if n == "engine"), None)
        if engine is None or not c.images_per_s:
            continue
        roles = by_role(c.threads.get(engine, {}))
        per_image = {role: 1e6 * cores / c.images_per_s for role, cores in roles.items()}
        other = sum(us for role, us in per_image.items() if role not in ROLES)
        cells = [f"{per_image.get(role, 0.0):.0f}" for role in ROLES]
        lines.append(
            f"| {name} | {' | '.join(cells)} | {other:.0f} | {sum(per_image.values()):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10, help="measured time per run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--baseline", default=BASELINE, help="git revision ('' to skip)")
    args = p.parse_args()
    if args.baseline:
        with worktree(args.baseline) as folder:
            rows, names = capacity(args.connections, args.seconds, args.rounds, folder)
    else:
        rows, names = capacity(args.connections, args.seconds, args.rounds, None)
    print(f"\n## Front-end capacity\n\n{capacity_table(rows, names, args.connections)}")
    print(f"\n## The engine's CPU per image by thread (µs)\n\n{threads_table(rows, names)}")
    print(f"\nmachine: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
