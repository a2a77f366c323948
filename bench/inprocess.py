"""The ceiling: the service's own decode + preprocess + inference, in one process, without HTTP.

    python bench/inprocess.py --bundle B --concurrency 8 --seconds 20

Closed loop with `concurrency` images in flight, as that many clients would keep: each round
decodes and preprocesses them in the same thread pool the service uses (preprocess_threads), then
runs them through the same Engine in calls of at most max_batch_size (0, the default: measured and
chosen at start as the service's engine does), its lanes (the engine's default unless --lanes)
running batches at once, each beside the others, as the batcher's workers do under load (a round
that is one batch runs alone, on every core, as the batcher's lone batch does), each
image written into its row of its lane's batch buffer, and every image's latency
is the round's. JPEGs are decoded as the service's default does (at the smallest DCT scale that
covers the input). Nothing waits for company and nothing crosses a socket, so this is the best an
HTTP service with these parts can do on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.pictures import photos  # noqa: E402
from service.inference.engine import Engine, batch_candidates, choose_batch_size  # noqa: E402
from vit_core.bundle import FAST, load_bundle  # noqa: E402
from vit_core.images import Preprocessor  # noqa: E402


def run(
    bundle: Path,
    concurrency: int,
    seconds: float,
    warmup_s: float = 3.0,
    max_batch_size: int = 0,
    threads: int = 4,
    max_image_pixels: int = 40_000_000,
    lanes: int = 0,
) -> tuple[list[float], float]:
    """(per-image latencies in seconds, the measured window in seconds); lanes 0: the engine's
    default."""
    manifest = load_bundle(bundle)
    engine = Engine(
        bundle, manifest, "cpu", max_batch_size=max_batch_size or None, lanes=lanes or None
    )
    if not max_batch_size:
        measured = engine.measure(batch_candidates(engine.capacity), threading.Event())
        max_batch_size = choose_batch_size(measured)
    prepare = Preprocessor(
        manifest.preprocess, manifest.image_size, max_image_pixels, manifest.pixels,
        scaled_decode=True,
    )  # fmt: skip
    images = photos(64)
    latencies: list[float] = []
    lane_count = len(engine.lanes)

    def lane_work(lane: int, pixels: list[np.ndarray]) -> None:
        """Every lane_count-th batch of the round, from `lane`, through its own buffer."""
        alone = len(pixels) <= max_batch_size  # one batch: no other lane runs beside it
        for i in range(lane * max_batch_size, len(pixels), lane_count * max_batch_size):
            engine.run_rows(FAST, pixels[i : i + max_batch_size], lane, alone)

    with ThreadPoolExecutor(threads) as pool, ThreadPoolExecutor(lane_count) as runners:
        started = time.perf_counter()
        measured_from, stop = started + warmup_s, started + warmup_s + seconds
        done = 0
        while (now := time.perf_counter()) < stop:
            batch = [images[(done + i) % len(images)] for i in range(concurrency)]
            pixels = [p.pixels for p in pool.map(prepare, batch)]
            list(runners.map(lane_work, range(lane_count), [pixels] * lane_count))
            finished = time.perf_counter()
            if now >= measured_from:
                latencies += [finished - now] * concurrency
            done += concurrency
        window = time.perf_counter() - measured_from
    return latencies, window


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--max-batch-size", type=int, default=0, help="0: measured")
    p.add_argument("--threads", type=int, default=4, help="preprocess threads")
    p.add_argument("--lanes", type=int, default=0, help="batches in flight (0: the engine's)")
    args = p.parse_args()
    latencies, window = run(
        args.bundle, args.concurrency, args.seconds, args.warmup, args.max_batch_size,
        args.threads, lanes=args.lanes,
    )  # fmt: skip
    print(json.dumps({"latencies": latencies, "window": window}))  # read by bench/load.py


if __name__ == "__main__":
    main()
