"""A front process: the app (service/app.py) under uvicorn on the instance's shared port, with the
connection guards, and a drain on SIGTERM. Started by the supervisor (service/instance.py), which
names it by `front_main`; it reaches the engine over the channel (service/channel/).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.app import create_app
from service.edge.connections import connection_cap, guarded, raise_fd_limit
from service.instance import configure_logging, die_with_parent
from service.metrics import Metrics
from service.runtime import Runtime
from service.settings import Settings
from service.state import SharedState
from vit_core.bundle import load_bundle
from vit_core.memory import tune_allocator

log = logging.getLogger("service")

STOP_NOW_GRACE_S = 1.0  # for answers already on their way when the front stops without a drain


def front_main(
    settings: Settings, listener: socket.socket, address: str, state: SharedState, index: int
) -> int:
    """One front (spawned by the supervisor): the app under uvicorn on the shared socket."""
    die_with_parent()
    configure_logging(settings)
    tune_allocator()  # request bodies come and go: fewer arenas, big buffers mapped
    state.started(f"front-{index}", os.getpid())
    metrics = Metrics(multiprocess=True, processes=state.processes)
    runtime = Runtime(settings, metrics, load_bundle(settings.bundle), state, address, index)
    server = DrainingServer(_config(settings, create_app(settings, runtime), runtime), runtime)
    runtime.on_engine_lost = server.stop_now
    server.run(sockets=[listener])
    if not server.started:
        return 3
    return 0 if server.drained else 1


def _config(settings: Settings, app: FastAPI, runtime: Runtime) -> uvicorn.Config:
    fd_limit = raise_fd_limit()
    max_connections = connection_cap(settings.max_connections, fd_limit)
    if max_connections < settings.max_connections:
        log.warning(
            "max_connections lowered to %d: the process may open %d files",
            max_connections,
            fd_limit,
        )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded(
            settings.http,
            settings.header_timeout_s,
            max_connections,
            draining=lambda: runtime.draining,
            refused=lambda error: runtime.metrics.rejections.labels(error.label).inc(),
        ),
        timeout_keep_alive=math.ceil(settings.keep_alive_s),
        log_level=settings.log_level,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
        server_header=False,
    )


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT, /readyz turns 503 at once and the listener stays open for
    drain_delay_s, so a load balancer sees the instance leave before connections are refused;
    then uvicorn's own graceful shutdown. A second signal skips the wait; Ctrl-C twice stops
    waiting for requests in progress.

    uvicorn's own handler records the signal and raises it again once shut down, so the process
    would end by SIGTERM (exit 143, "Terminated") however cleanly it drained. The signals are
    handled here instead, and `front_main` returns the exit code: 0 after a clean drain."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._signalled = False

    @property
    def drained(self) -> bool:
        """Every request taken was answered: none cut off by drain_timeout_s or a forced exit."""
        return not self.force_exit and self._runtime.abandoned == 0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = self.force_exit or sig == signal.SIGINT
            return
        delay = self._runtime.settings.drain_delay_s
        if self._signalled or not delay or not self.started:
            self.should_exit = True
            return
        self._signalled = True
        self._runtime.begin_drain()
        log.info("draining: /readyz says 503; closing the listener in %.1f s", delay)
        timer = threading.Timer(delay, self._close_listener)
        timer.daemon = True  # a second signal may end the process before it fires
        timer.start()

    def _close_listener(self) -> None:
        self.should_exit = True

    def stop_now(self) -> None:
        """Stop without a drain (the engine is gone): the 503s already on their way get a
        moment to be written, then every connection is dropped, kept-alive ones included."""
        self.should_exit = True
        timer = threading.Timer(STOP_NOW_GRACE_S, setattr, (self, "force_exit", True))
        timer.daemon = True
        timer.start()
