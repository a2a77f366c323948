"""The allocator's tuning and the idle trim, in a fresh interpreter (they change the process)."""

from __future__ import annotations

import subprocess
import sys

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
