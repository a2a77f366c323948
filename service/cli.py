"""vit-serve: check the settings and the bundle, then run the service under uvicorn (in this
process, or in settings.workers worker processes under a supervisor: service/workers.py).

Exit codes: 0 after a clean shutdown (SIGTERM or Ctrl-C: every accepted request answered); 1
when work was still queued at the end of drain_timeout_s (or the instance had failed); 2 for an
invalid setting, bundle or provider (the message names the setting); 3 when the server could not
start (e.g. the port is taken; the log says why).
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from service.app import create_app
from service.edge.connections import connection_cap, guarded_h11, raise_fd_limit
from service.inference.engine import EngineError
from service.metrics import Metrics
from service.runtime import Runtime, open_engine
from service.settings import Settings, describe, unknown_variables
from service.workers import Peers, supervise
from vit_core.bundle import BundleError, load_bundle
from vit_core.memory import tune_allocator

log = logging.getLogger("service")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_cli(sys.argv[1:] if argv is None else argv)
    except ValidationError as e:
        print(f"vit-serve: {describe(e)}", file=sys.stderr)
        return 2
    configure_logging(settings)
    for var in unknown_variables():
        log.warning("ignoring %s: not a vit-serve setting", var)
    if settings.workers == 1:
        return serve(settings)
    try:  # the bundle checked once here, so that a bad one is one message, not one per worker
        load_bundle(settings.bundle)
    except BundleError as e:
        return _invalid_bundle(e)
    return supervise(settings, worker_main)


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)


def worker_main(settings: Settings, sockets: list[socket.socket], peers: Peers) -> int:
    """One worker under the supervisor (service/workers.py): its own logging, then serve."""
    configure_logging(settings)
    return serve(settings, sockets, peers)


def serve(
    settings: Settings, sockets: list[socket.socket] | None = None, peers: Peers | None = None
) -> int:
    """One process of the service, on its own port or on the supervisor's `sockets`."""
    # Load here, not in the app's start-up, so that a bad bundle or provider is a message naming
    # the setting rather than a traceback from the server.
    try:
        engine = open_engine(settings, load_bundle(settings.bundle))
    except BundleError as e:
        return _invalid_bundle(e)
    except EngineError as e:
        flag = "--" + e.setting.replace("_", "-")
        print(f"vit-serve: invalid setting {e.setting} ({flag}): {e}", file=sys.stderr)
        return 2
    tune_allocator()  # before the threads that decode start their arenas
    runtime = Runtime(settings, Metrics(multiprocess=peers is not None), engine, peers)
    server = DrainingServer(_config(settings, create_app(settings, runtime)), runtime)
    server.run(sockets=sockets)
    if not server.started:
        return 3
    return 0 if runtime.drained else 1


def _invalid_bundle(e: BundleError) -> int:
    print(f"vit-serve: invalid setting bundle (--bundle / VIT_BUNDLE): {e}", file=sys.stderr)
    return 2


def _config(settings: Settings, app: FastAPI) -> uvicorn.Config:
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
        http=guarded_h11(settings.header_timeout_s, max_connections),
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
    handled here instead, and `serve` returns the exit code: 0 after a clean drain."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._signalled = False

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


if __name__ == "__main__":
    sys.exit(main())
