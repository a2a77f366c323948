"""Memory held under a ceiling: decodes share a byte budget, and freed memory goes back to the OS.

- `MemoryBudget` is a byte-weighted semaphore. Each decode holds its estimated peak
  (image_costs.decoded_bytes) while it runs, so however many requests arrive at once, the images
  being decoded never take more than the budget; the rest wait their turn (or time out).
- glibc keeps freed memory for reuse: up to 8 arenas per core, and a large-allocation threshold
  that grows after each big free, so one 300 MB decode can leave the process 300 MB bigger for
  good. `tune_allocator` caps the arenas and fixes the threshold at 32 MiB (buffers above it, big
  decodes and batches, are mapped and so return on free), and `trim` hands back the heap left
  after a large decode. A lower threshold returns more but costs throughput: at 1 MiB every
  640×480 decode is a fresh mapping, and page faults cut requests/s at 8 connections by ~20 %
  (bench/load.py).
- Many medium buffers, each under the threshold, leave the heap fragmented rather than big: a
  burst of the hostile corpus left the engine +120 MiB and a front +50 MiB after every answer.
  `TrimWhenIdle` trims once a process has nothing in flight again, if it grew since its last trim.
- `malloc_trim` hands back the free pages inside every arena, but of the free space at an
  arena's top only the main arena's: a thread's arena gives its top back on `free`, once the top
  passes the trim threshold. At 64 MiB the engine's thread arenas kept up to ~100 MiB after a
  burst, however often it trimmed; at `TRIM_THRESHOLD` (16 MiB) each keeps at most that much.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vit_core.errors import RequestTimeout

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc mallopt parameters
MMAP_THRESHOLD = 32 << 20  # glibc's own dynamic ceiling, fixed: above it, memory is mapped
ARENAS = 2  # the event loop and the threads; more arenas only hoard freed memory
TRIM_AFTER = 64 << 20  # bytes: a decode this big is followed by malloc_trim
TRIM_AFTER_GROWTH = 16 << 20  # bytes a process grew by since its last trim: trimmed when idle
TRIM_THRESHOLD = 16 << 20  # free bytes at the top of an arena that `free` hands back at once
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


class MemoryBudget:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._cond = threading.Condition()

    @property
    def held(self) -> int:
        return self.capacity - self._free

    @contextmanager
    def hold(self, size: int, timeout: float) -> Iterator[None]:
        """Wait until `size` bytes are free (at most `timeout` s), hold them, give them back."""
        size = min(size, self.capacity)  # one image over the budget alone is refused earlier
        with self._cond:
            if not self._cond.wait_for(lambda: self._free >= size, timeout):
                raise RequestTimeout("the image waited too long for decode memory")
            self._free -= size
        try:
            yield
        finally:
            with self._cond:
                self._free += size
                self._cond.notify_all()
            if size >= TRIM_AFTER:
                trim()


def memory_limit() -> int:
    """The container's memory limit (cgroup v2 or v1), else the machine's memory, in bytes."""
    for path in _CGROUP_LIMITS:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 says "no limit" with a huge number
            return int(text)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_GLIBC = hasattr(_libc, "mallopt") and hasattr(_libc, "malloc_trim")


def tune_allocator() -> None:
    """Fewer arenas, a fixed mmap threshold (module docstring: why); glibc only, else a no-op."""
    if not _GLIBC:
        log.info("not glibc: the allocator keeps its defaults")
        return
    for param, value in (
        (_M_ARENA_MAX, ARENAS),
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    ):
        _libc.mallopt(param, value)


def trim() -> None:
    if _GLIBC:
        _libc.malloc_trim(0)


_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident() -> int:
    """This process's resident memory in bytes (one read of /proc/self/statm, ~5 µs)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


class TrimWhenIdle:
    """Call `idle()` whenever the process has nothing in flight. It trims the heap if the process
    grew by `after` bytes since its last trim: steady traffic, whose memory stays put, costs one
    /proc read per idle moment; a burst is handed back once it is over (module docstring)."""

    def __init__(self, after: int = TRIM_AFTER_GROWTH) -> None:
        self.after = after
        self._floor = resident() if _GLIBC else 0

    def idle(self) -> None:
        if not _GLIBC:
            return
        now = resident()
        if now - self._floor >= self.after:
            trim()
            self._floor = resident()  # what is still held is live: the next trim waits for more
        else:
            self._floor = min(self._floor, now)
