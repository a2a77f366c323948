"""What `ps`, `top -H` and /proc call the instance's processes and threads.

Spawned children would otherwise all be `python -c from multiprocessing.spawn import …`, and
every thread `python`: nothing says which process is the engine, nor which of its threads is
burning a core. Each process takes its role as its title (`vit-serve engine`, `vit-serve
front-0`) and as its main thread's name (`vit-engine`, `vit-front-0`: the 15 bytes Linux
keeps, shown by top); each Python thread of the engine takes its Python name (`decode_0`,
`batcher-0`, as Python 3.14 does by itself); ONNX Runtime's own threads, started with its
sessions, take `onnxruntime`. The benchmarks read the same names to split the engine's CPU.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from setproctitle import getthreadtitle, setproctitle, setthreadtitle

ONNXRUNTIME = "onnxruntime"


def name_process(role: str) -> None:
    """This process's title and its main thread's name, from its role (`engine`, `front-0`)."""
    setproctitle(f"vit-serve {role}")
    setthreadtitle(f"vit-{role}")


def name_thread() -> None:
    """The calling thread's OS name, from its Python name: a thread's target or a pool's
    initializer calls it first."""
    setthreadtitle(threading.current_thread().name)


@contextmanager
def threads_started_as(name: str) -> Iterator[None]:
    """Threads that native code starts inside the block (ONNX Runtime's pools, when it opens a
    session) inherit the name of the thread that started them: this one, renamed meanwhile."""
    previous = getthreadtitle()
    setthreadtitle(name)
    try:
        yield
    finally:
        setthreadtitle(previous)
