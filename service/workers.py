"""Several full replicas of the service behind one port (VIT_WORKERS > 1).

    vit-serve (supervisor): binds host:port, empties a metrics folder, starts N workers
      ├─ worker 0: uvicorn on the shared socket + its own Runtime (engine, batcher, threads)
      └─ worker 1: ...                                   (the kernel hands each connection to one)

Why replicas: one process answers a few hundred images/s before its event loop and GIL are the
bottleneck (docs/benchmarks.md); each replica brings its own. Every guarantee of one process holds
per worker (429 before bodies are read, deadlines, disconnects), and the shared ones are made so:

- readiness: each worker publishes whether it is ready (`Peers`, shared memory); /readyz on any
  worker is 200 only when all are, so a probe's answer is the whole instance's;
- metrics: prometheus_client's multiprocess mode; a scrape of any worker sums every worker's
  samples (service/metrics.py); the folder is emptied before the workers start and removed after;
- drain: SIGTERM (or SIGINT) to the supervisor reaches every worker, each drains as one process
  does (/readyz 503 at once, listener open for drain_delay_s, in-flight work finishes); Ctrl-C in
  a terminal also reaches the workers directly, and that second signal skips the delay;
- a worker that exits on its own stops the instance (the others are drained): the orchestrator
  restarts it whole, rather than it serving on at reduced capacity while saying ready.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from typing import Any

from prometheus_client import multiprocess

from service.settings import Settings

log = logging.getLogger("service")

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when a worker imports it


class Peers:
    """One readiness flag per worker, in memory every worker shares."""

    def __init__(self, flags: Any, index: int) -> None:
        self._flags, self._index = flags, index  # flags: multiprocessing Array of bytes

    def publish(self, ready: bool) -> None:
        self._flags[self._index] = int(ready)

    def all_ready(self) -> bool:
        return all(self._flags)


Entry = Callable[[Settings, list[socket.socket], Peers], int]  # one worker's main: its exit code


def supervise(settings: Settings, entry: Entry) -> int:
    """Run settings.workers workers of `entry` on one socket until a signal (or a worker exits).
    `entry` is a module-level function (spawn pickles it by name): cli.worker_main."""
    try:
        listener = _bind(settings.host, settings.port)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, e)
        return 3
    folder = tempfile.mkdtemp(prefix="vit-metrics-")
    os.environ[METRICS_DIR] = folder  # the spawned workers inherit it before importing anything
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters: no threads forked mid-lock
    flags = spawn.Array("b", settings.workers, lock=False)
    workers = [
        spawn.Process(
            target=_worker, args=(entry, settings, listener, flags, i), name=f"worker-{i}"
        )
        for i in range(settings.workers)
    ]
    stopping = False
    told: set[int] = set()  # pids sent SIGTERM: a second one would skip their drain delay

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.pid is not None and w.pid not in told and w.exitcode is None:
                told.add(w.pid)
                os.kill(w.pid, signal.SIGTERM)  # each worker drains as a lone process would

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for w in workers:
            w.start()
        if stopping:  # a signal came while they started: tell the ones started after it
            stop(signal.SIGTERM, None)
        log.info("%d workers serving on %s:%d", len(workers), settings.host, settings.port)
        return _watch(workers, stop, lambda: stopping)
    finally:
        listener.close()
        for w in workers:
            if w.pid is not None:
                multiprocess.mark_process_dead(w.pid, folder)  # type: ignore[no-untyped-call]
        shutil.rmtree(folder, ignore_errors=True)


def _watch(workers: list[SpawnProcess], stop: Any, stopping: Any) -> int:
    """Wait for every worker; the first to exit unasked stops the rest. The exit code: 0 if all
    stopped when asked (uvicorn re-raises the signal it drained on), else the first failure's."""
    running = {w.sentinel: w for w in workers}
    code = 0
    while running:
        for sentinel in wait(list(running)):
            w = running.pop(sentinel)  # type: ignore[arg-type]
            w.join()
            if not stopping():
                log.error("%s exited (code %s); stopping the others", w.name, w.exitcode)
                stop(signal.SIGTERM, None)
                code = code or _positive(w.exitcode) or 1
            elif w.exitcode not in CLEAN:
                code = code or _positive(w.exitcode) or 1
    return code


CLEAN = (0, -signal.SIGTERM, -signal.SIGINT)  # a worker's exit code after a drain


def _positive(exitcode: int | None) -> int:
    """A process exit status from a multiprocessing exit code (-N: killed by signal N)."""
    return 128 - exitcode if exitcode is not None and exitcode < 0 else exitcode or 0


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


def _worker(
    entry: Entry, settings: Settings, listener: socket.socket, flags: Any, index: int
) -> None:
    sys.exit(entry(settings, [listener], Peers(flags, index)))
