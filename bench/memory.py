"""Resident memory of a serving instance, at readiness and in its steady state.

    python bench/memory.py [--bundle models/demo] [--baseline REV] [--rounds 3]

Each system is started, its resident memory (every process of it, from /proc) read when /readyz
turns 200, then every graph the bundle has (/classify, /embed, /attention) is sent full batches
(`max_batch_size` images in one request, --rounds times) and the memory read again: the steady
state, where ONNX Runtime's arenas have grown to the largest batch of every graph. Systems: the
service as it is (batch size measured at warm-up, a lane per core), at batch size 8 with its
lanes and with one lane (no one-core sessions beside the graphs' own: what they cost), at
--max-batch-size 32 (the old default), at batch size 8 with four fronts, and the service at git
revision --baseline (one process; checked out into a temp worktree and run from there), all on
the CPU provider.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.pictures import photos  # noqa: E402
from bench.servers import (  # noqa: E402
    BASELINE,
    ROOT,
    baseline_command,
    free_port,
    service_command,
    serving,
    worktree,
)

MiB = 1 << 20
GRAPHS = ("/classify", "/embed", "/attention")


def descendants(pid: int) -> Iterator[int]:
    """`pid` and every process below it."""
    yield pid
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            yield from descendants(int(child))


def resident(pid: int) -> dict[int, int]:
    """Each process of the tree at `pid`: its resident memory in bytes (VmRSS)."""
    found = {}
    for p in descendants(pid):
        status = Path(f"/proc/{p}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
        found[p] = int(kib) * 1024
    return found


def batch_size(url: str) -> int:
    batching = httpx.get(f"{url}/model", timeout=10).json().get("batching", {})
    return int(batching.get("max_batch_size") or 32)


def drive(url: str, rounds: int) -> None:
    """Every graph the bundle serves, `rounds` requests of one full batch each."""
    size = batch_size(url)
    files = [("file", (f"{i}.jpg", jpeg, "image/jpeg")) for i, jpeg in enumerate(photos(size))]
    with httpx.Client(base_url=url, timeout=300) as client:
        for path in GRAPHS:
            for _ in range(rounds):
                answer = client.post(path, files=files)
                if answer.status_code == 501:  # no such graph in this bundle
                    break
                answer.raise_for_status()


def systems(bundle: Path, checkout: Path | None) -> dict[str, list[str]]:
    found = {
        "service (batch size measured)": service_command(bundle, free_port(), None, None, 256),
        "service, batch size 8": service_command(bundle, free_port(), 8, None, 256),
        "service, batch size 8, one lane": service_command(
            bundle, free_port(), 8, None, 256, "--engine-lanes=1"
        ),
        "service, max_batch_size 32": service_command(bundle, free_port(), 32, 5, 256),
        "service, batch size 8, four fronts": service_command(
            bundle, free_port(), 8, 5, 256, "--workers=4"
        ),
    }
    if checkout is not None:
        old = service_command(bundle, free_port(), 32, 5, 256)
        found["baseline, max_batch_size 32"] = baseline_command(checkout, old)
    return found


def measure(bundle: Path, checkout: Path | None, rounds: int) -> list[tuple[str, int, str, str]]:
    rows = []
    for name, command in systems(bundle, checkout).items():  # one at a time: no sharing
        with serving({name: command}) as running:
            url, pid = running.urls[name], running.pids[name]
            ready = resident(pid)
            drive(url, rounds)
            steady = resident(pid)
            rows.append((name, batch_size(url), _mib(ready), _mib(steady)))
            print(f"{name}: ready {_mib(ready)}, steady {_mib(steady)}", flush=True)
    return rows


def _mib(processes: dict[int, int]) -> str:
    total = sum(processes.values()) / MiB
    each = " + ".join(f"{v / MiB:.0f}" for v in processes.values())
    return f"{total:.0f} MiB ({each})" if len(processes) > 1 else f"{total:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "demo")
    parser.add_argument("--baseline", default=BASELINE, help="git revision; '' to skip")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with ExitStack() as stack:
        checkout = stack.enter_context(worktree(args.baseline)) if args.baseline else None
        rows = measure(args.bundle.resolve(), checkout, args.rounds)
    print("\n| system | max batch | at /readyz | steady state (every graph at its largest batch) |")
    print("|---|---|---|---|")
    for name, size, ready, steady in rows:
        print(f"| {name} | {size} | {ready} | {steady} |")


if __name__ == "__main__":
    main()
