"""One instance of the service: a supervisor, one engine process, VIT_WORKERS front processes.

    vit-serve (supervisor): binds host:port, makes the instance's folder, then starts
      ├─ engine     ONNX Runtime, the batcher and the decode stage (service/engine_process.py),
      │             listening on a Unix socket in the folder
      ├─ front 0    uvicorn on the shared port: the HTTP edge, which reads, checks and prices
      ├─ front 1    requests and passes their encoded images to the engine (service/cli.py)
      └─ …          (the kernel hands each new connection to one front)

Why the split: one process's event loop and GIL answer a few hundred images/s; a GPU takes
thousands. Fronts scale the HTTP side across cores while every image still meets the one engine,
its one batcher (batches as full as the traffic allows), one copy of the weights, one CUDA context.

What holds across the processes:
- readiness: the engine publishes its phase and each front its flag (service/state.py); /readyz on
  any front is 200 only when the engine is warm and every front is up;
- metrics: every process writes prometheus_client's multiprocess files into the folder; a scrape
  of any front sums them all (service/metrics.py);
- drain: SIGTERM (or SIGINT) to the supervisor reaches every front, each drains as before (/readyz
  503 at once, the listener open for drain_delay_s, in-flight work answered); once every front
  has exited the engine is told, and it runs what is queued and exits. Exit code 0 when nothing
  was lost;
- a dead engine: every front answers 503 at once (its channel closes) and the supervisor stops the
  instance, exit code non-zero, for the orchestrator to restart it whole;
- a dead front: restarted, up to FRONT_RESTARTS times in RESTART_WINDOW_S (/readyz says 503 until
  it is back); past that the instance stops, as a crash loop is not an instance to route to;
- a dead supervisor (kill -9): the kernel sends every child SIGTERM (PR_SET_PDEATHSIG), so the
  fronts drain and the engine follows them; the folder it leaves is removed by the next start.

`ps` shows the processes as `vit-serve`, `vit-serve engine` and `vit-serve front-N`, and `top` as
`vit-serve`, `vit-engine` and `vit-front-N` (service/os_names.py).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

from prometheus_client import multiprocess

from service.os_names import name_process
from service.settings import Settings
from service.state import SharedState

log = logging.getLogger("service")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when a process imports it
FOLDER_PREFIX = "vit-instance-"
FRONT_RESTARTS = 5
RESTART_WINDOW_S = 60.0
ENGINE_START_S = 600.0  # opening the sessions (a CUDA context, a large graph) before listening
_PR_SET_PDEATHSIG = 1
_SOCKET_PATH_MAX = 107  # bytes in a Unix socket's path (sun_path, less its terminating NUL)

# "module:function", imported by the process that runs it (the supervisor loads neither):
# engine(settings, address, state) and front(settings, listener, address, state, index) → code
Entry = str


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the supervisor dies (Linux), so no process is orphaned
    serving on; if it is already gone, stop now."""
    libc = ctypes.CDLL(None, use_errno=True)
    if hasattr(libc, "prctl"):
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os.kill(os.getpid(), signal.SIGTERM)


def run_instance(settings: Settings, front: Entry, engine: Entry) -> int:
    """The supervisor: the engine, then the fronts, until a signal (or a death); the exit code."""
    try:
        listener = _bind(settings.host, settings.port)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, e)
        return 3
    folder = _instance_folder()
    os.environ[METRICS_DIR] = str(folder / "metrics")  # inherited by every process it starts
    try:
        return Supervisor(settings, listener, folder, front, engine).run()
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        listener: socket.socket,
        folder: Path,
        front: Entry,
        engine: Entry,
    ) -> None:
        self.settings, self.listener, self.folder = settings, listener, folder
        self._front, self._engine_entry = front, engine
        self.address = str(folder / "engine.sock")
        self.state = SharedState(settings.workers)
        self._spawn = multiprocessing.get_context("spawn")  # fresh interpreters: no forked locks
        self.engine: SpawnProcess | None = None
        self.fronts: dict[int, SpawnProcess] = {}
        self.stopping = False
        self.code = 0
        self._restarts: list[float] = []
        self._engine_told = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._signalled)
        signal.signal(signal.SIGINT, self._signalled)
        self.state.started("supervisor", os.getpid())
        self.engine = self._start("engine", self._engine_entry, self.settings, self.address,
                                  self.state)  # fmt: skip
        if not self._engine_listening():
            return self._exit_code(self.engine)
        for index in range(self.settings.workers):
            self._start_front(index)
        log.info("%d front(s) started; the engine is warming up", len(self.fronts))
        self._watch()
        return self.code

    def _start(self, name: str, entry: Entry, *args: Any) -> SpawnProcess:
        process = self._spawn.Process(target=_child, args=(entry, *args), name=name)
        process.start()
        return process

    def _start_front(self, index: int) -> None:
        args = (self.settings, self.listener, self.address, self.state, index)
        self.fronts[index] = self._start(f"front-{index}", self._front, *args)

    def _engine_listening(self) -> bool:
        """Wait until the engine listens (its phase moves on), or exits (a bad provider: 2)."""
        assert self.engine is not None
        deadline = time.monotonic() + ENGINE_START_S
        while self.state.phase == "starting":
            if not self.engine.is_alive() or time.monotonic() > deadline or self.stopping:
                self._stop_engine()
                return False
            time.sleep(0.02)
        return True

    def _watch(self) -> None:
        """Until every process has exited: restart or stop on a death; tell the engine to stop
        once the fronts have all gone."""
        while self.fronts or self.engine is not None:
            processes = [*self.fronts.values(), *([self.engine] if self.engine else [])]
            for sentinel in wait([p.sentinel for p in processes], timeout=0.5):
                process = next(p for p in processes if p.sentinel == sentinel)
                process.join()
                self._exited(process)
            if self.stopping and not self.fronts:
                self._stop_engine()

    def _exited(self, process: SpawnProcess) -> None:
        _mark_dead(process)
        if process is self.engine:
            self.engine = None
            if not self.stopping:
                log.error("the engine exited (code %s); stopping the instance", process.exitcode)
                self.state.fail("the engine has stopped")
                self._fail(process)
            elif process.exitcode != 0:
                self._fail(process)
            return
        index = next(i for i, p in self.fronts.items() if p is process)
        del self.fronts[index]
        self.state.front_up(index, False)  # a dead front cannot clear its own flag
        self.state.started(process.name, 0)
        if self.stopping:
            if process.exitcode not in CLEAN:
                self._fail(process)
        elif self._may_restart():
            log.error("%s exited (code %s); starting it again", process.name, process.exitcode)
            self._start_front(index)
        else:
            log.error("%s exited (code %s), %d restarts in %.0f s; stopping the instance",
                      process.name, process.exitcode, FRONT_RESTARTS, RESTART_WINDOW_S)  # fmt: skip
            self._fail(process)

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S]
        self._restarts.append(now)
        return len(self._restarts) <= FRONT_RESTARTS

    def _fail(self, process: SpawnProcess) -> None:
        self.code = self.code or self._exit_code(process) or 1
        if not self.stopping:
            self._signalled(signal.SIGTERM, None)

    def _signalled(self, signum: int, frame: object) -> None:
        """Stop: every front drains. Each signal is passed on, so a second one skips the fronts'
        drain delay, as it does for a lone front. The supervisor's copy of the listening socket
        closes now (no front will be started again), so once the fronts close theirs, a
        connection that arrives is refused rather than left in the backlog with nobody to
        accept it."""
        self.stopping = True
        self.listener.close()
        for process in self.fronts.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    def _stop_engine(self) -> None:
        engine = self.engine
        if engine is not None and engine.pid is not None and not self._engine_told:
            self._engine_told = True
            if engine.is_alive():
                os.kill(engine.pid, signal.SIGTERM)

    @staticmethod
    def _exit_code(process: SpawnProcess) -> int:
        process.join(ENGINE_START_S)
        return _positive(process.exitcode)


CLEAN = (0, -signal.SIGTERM, -signal.SIGINT)  # a front's exit code after a drain


def _child(entry: Entry, *args: Any) -> None:
    name_process(multiprocessing.current_process().name)  # `vit-serve engine`, `vit-serve front-0`
    module, _, function = entry.partition(":")
    sys.exit(getattr(importlib.import_module(module), function)(*args))


def _positive(exitcode: int | None) -> int:
    """A process exit status from a multiprocessing exit code (-N: killed by signal N)."""
    return 128 - exitcode if exitcode is not None and exitcode < 0 else exitcode or 0


def _mark_dead(process: SpawnProcess) -> None:
    """Its live gauges leave the sums (prometheus_client's multiprocess mode)."""
    if process.pid is not None:
        multiprocess.mark_process_dead(process.pid, os.environ[METRICS_DIR])  # type: ignore[no-untyped-call]


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets that say TCP, and
    # without it an answer written in two parts waits ~40 ms for the client's delayed ACK.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


def _instance_folder() -> Path:
    """A private folder (mode 0700) for this instance's metrics files and the engine's socket, in
    the temp folder, or in /tmp where that path would be too long for a Unix socket; folders left
    by instances whose supervisor is dead (kill -9) are removed first."""
    base = Path(tempfile.gettempdir())
    if len(os.fsencode(base)) > _SOCKET_PATH_MAX - 40:  # room for the folder and socket names
        base = Path("/tmp")
    for stale in base.glob(f"{FOLDER_PREFIX}*"):
        pid = stale.name.removeprefix(FOLDER_PREFIX).split("-")[0]
        mine = stale.is_dir() and stale.stat().st_uid == os.getuid()
        if pid.isdigit() and mine and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-", dir=base))
    (folder / "metrics").mkdir()
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
