"""The allocator's tuning and the idle trim, in a fresh interpreter (they change the process)."""

from __future__ import annotations

import subprocess
import sys

from vit_core.memory import TRIM_THRESHOLD

# A burst of 1 MiB buffers (under the fixed mapping threshold: they come from the heap), each
# followed by a small one that stays, so freeing the big ones leaves holes glibc keeps, not a top
# it would trim by itself. Prints the resident MiB after the free, then after idle().
BURST = """
from vit_core.memory import TrimWhenIdle, resident, tune_allocator
tune_allocator()
trimmer = TrimWhenIdle()
big, kept = [], []
for _ in range(160):
    big.append(bytearray(b"\x01") * (1 << 20))  # written: calloc's fresh pages are not resident
    kept.append(bytearray(1024))  # over pymalloc's 512 bytes: from the heap too
del big
freed = resident()
trimmer.idle()
print(freed >> 20, resident() >> 20)
"""


def test_a_burst_of_heap_buffers_is_handed_back_once_the_process_is_idle() -> None:
    out = subprocess.run([sys.executable, "-c", BURST], capture_output=True, text=True, check=True)
    freed, idle = map(int, out.stdout.split())
    assert freed - idle > 100, f"{freed} MiB resident after the free, {idle} after idle()"


# 60 MiB in a thread, which allocates from an arena of its own, freed all at once: the space
# lands at the top of that arena, which malloc_trim leaves alone (it trims only the main arena's
# top); the trim threshold alone bounds what stays. Prints the resident MiB before the burst and
# once the process is idle after it.
THREAD_BURST = """
import threading
from vit_core.memory import TrimWhenIdle, resident, tune_allocator
tune_allocator()
trimmer = TrimWhenIdle()
start = resident()

def burst():
    big = [bytearray(b"\x01") * (1 << 20) for _ in range(60)]
    del big

thread = threading.Thread(target=burst)
thread.start()
thread.join()
trimmer.idle()
print(start >> 20, resident() >> 20)
"""


def test_a_burst_freed_in_a_decode_thread_keeps_at_most_the_trim_threshold() -> None:
    out = subprocess.run(
        [sys.executable, "-c", THREAD_BURST], capture_output=True, text=True, check=True
    )
    start, idle = map(int, out.stdout.split())
    assert idle - start <= TRIM_THRESHOLD >> 20, f"{start} MiB before the burst, {idle} after"
