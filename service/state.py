"""What the processes of one instance know of each other, in memory they share.

    engine   phase (starting → warming → ready → draining → stopped; or failed), images held
             (reserved or queued: what a front's 429-before-reading checks), warm-up progress,
             and why it failed
    fronts   one flag each: up and not draining
    pids     of the supervisor, the engine and each front (metrics of each process, by name)

The supervisor makes it before it starts anyone (service/instance.py); the engine writes its part,
each front its flag, and every front reads all of it to answer /readyz and to refuse work early.
Plain shared integers, no locks: each field has one writer, and a reader that sees a value one
update late answers as it would have a microsecond earlier.
"""

from __future__ import annotations

import ctypes
from multiprocessing.sharedctypes import RawArray
from typing import Literal, get_args

Phase = Literal["starting", "warming", "ready", "draining", "stopped", "failed"]
PHASES: tuple[Phase, ...] = get_args(Phase)
_PHASE, _HELD, _WARMED, _WARM_STEPS = range(4)
_REASON_BYTES = 240


class SharedState:
    def __init__(self, fronts: int) -> None:
        self._engine = RawArray(ctypes.c_int64, 4)
        self._reason = RawArray(ctypes.c_char, _REASON_BYTES)
        self._fronts = RawArray(ctypes.c_int8, fronts)
        self._pids = RawArray(ctypes.c_int64, 2 + fronts)  # supervisor, engine, fronts…

    # -- the engine's part ---------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return PHASES[self._engine[_PHASE]]

    @phase.setter
    def phase(self, phase: Phase) -> None:
        self._engine[_PHASE] = PHASES.index(phase)

    def fail(self, reason: str) -> None:
        self._reason.value = reason.encode()[: _REASON_BYTES - 1]
        self.phase = "failed"

    @property
    def reason(self) -> str:
        return bytes(self._reason.value).decode(errors="replace")

    @property
    def held(self) -> int:
        """Images the engine holds: reserved by requests still decoding, or queued."""
        return int(self._engine[_HELD])

    @held.setter
    def held(self, images: int) -> None:
        self._engine[_HELD] = images

    @property
    def warm_up(self) -> tuple[int, int]:
        """(runs done, runs in all) of the warm-up."""
        return int(self._engine[_WARMED]), int(self._engine[_WARM_STEPS])

    def warmed(self, done: int, total: int) -> None:
        self._engine[_WARMED], self._engine[_WARM_STEPS] = done, total

    # -- the fronts' part ----------------------------------------------------------------------

    @property
    def fronts(self) -> int:
        return len(self._fronts)

    def front_up(self, index: int, up: bool) -> None:
        self._fronts[index] = int(up)

    def all_fronts_up(self) -> bool:
        return all(self._fronts)

    # -- who is who ----------------------------------------------------------------------------

    def started(self, process: str, pid: int) -> None:
        """`process`: "supervisor", "engine" or "front-N"."""
        self._pids[self._slot(process)] = pid

    def processes(self) -> dict[str, int]:
        """Every process of the instance that has said so, by name: its pid."""
        names = ["supervisor", "engine", *(f"front-{i}" for i in range(self.fronts))]
        return {name: int(pid) for name, pid in zip(names, self._pids, strict=True) if pid}

    def _slot(self, process: str) -> int:
        if process.startswith("front-"):
            return 2 + int(process.removeprefix("front-"))
        return ("supervisor", "engine").index(process)
