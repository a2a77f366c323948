"""Front-end capacity: what one service process pushes through HTTP when the model costs nothing.

    python bench/frontend.py [--connections 16] [--seconds 10] [--rounds 2]

A 1-block, D=32 ViT at 224 px (exported once into the temp dir) behind the service and behind
the naive one-call-per-request server, the service with two worker processes (VIT_WORKERS=2:
how it scales past one process) and the service with the scaled JPEG decode
(VIT_EXACT_DECODE=false); 640×480 JPEGs posted raw to /classify, one per request, by
bench/rawload.py. Per system: images/s, the server's CPU over the window (cores), and images/s
per server core, the figure that says how many cores would feed a GPU. The load generator's own
CPU is shown too: it shares the machine.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.pictures import photos  # noqa: E402
from bench.rawload import Capacity, measure, post  # noqa: E402
from bench.servers import (  # noqa: E402
    featherweight,
    free_port,
    naive_command,
    port_of,
    service_command,
    serving,
)

QUEUE = 256


def capacity(connections: int, seconds: float, rounds: int) -> dict[str, Capacity]:
    """Every system measured `rounds` times in a rotating order; per system the round with the
    most images per server core (other work on a shared machine only ever lowers it)."""
    bundle = featherweight()
    commands = {
        "service": service_command(bundle, free_port(), 32, 5, QUEUE),
        "service, 2 workers": service_command(bundle, free_port(), 32, 5, QUEUE, "--workers=2"),
        # VIT_EXACT_DECODE=false: JPEGs decoded at a DCT scale (off by default, see its study)
        "service, scaled decode": service_command(
            bundle, free_port(), 32, 5, QUEUE, "--exact-decode=false"
        ),
        "naive": naive_command(bundle, free_port()),
    }
    requests = [post("/classify", image, "image/jpeg") for image in photos(64)]
    runs: dict[str, list[Capacity]] = defaultdict(list)
    with serving(commands) as running:
        names = list(commands)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                pids = _family(running.pids[name])
                run = measure(port_of(commands[name]), pids, requests, connections, seconds)
                print(f"front end, {name}, round {r}: {run}", flush=True)
                runs[name].append(run)
    return {name: max(rs, key=lambda c: c.per_core) for name, rs in runs.items()}


def _family(pid: int) -> list[int]:
    """The process and its children (worker processes, when the server has them)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return [pid, *kids]


def capacity_table(rows: dict[str, Capacity], connections: int) -> str:
    naive = rows.get("naive")
    lines = [
        "| system | connections | images/s | server cores | images/s per server core | "
        "÷ naive per core | p50 ms | client cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in rows.items():
        ratio = f"{c.per_core / naive.per_core:.2f}×" if naive else ""
        errors = f" ({c.errors} errors)" if c.errors else ""
        lines.append(
            f"| {name}{errors} | {connections} | {c.images_per_s:.0f} | {c.server_cores:.2f} | "
            f"**{c.per_core:.0f}** | {ratio} | {c.p50_ms:.1f} | {c.client_cores:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10, help="measured time per run")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    rows = capacity(args.connections, args.seconds, args.rounds)
    print(f"\n## Front-end capacity\n\n{capacity_table(rows, args.connections)}")


if __name__ == "__main__":
    main()
