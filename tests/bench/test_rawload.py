"""bench/rawload.py's CPU accounting by thread: what the front-end bench splits the engine by."""

from __future__ import annotations

import os
import threading
import time

from bench.rawload import by_role, thread_cpu
from service.os_names import name_thread


def test_a_busy_threads_cpu_is_counted_under_its_role() -> None:
    stop, ready = threading.Event(), threading.Event()

    def spin() -> None:
        name_thread()
        ready.set()
        deadline = time.thread_time() + 0.3  # its own CPU: a busy machine only stretches this
        while time.thread_time() < deadline:
            pass
        stop.wait()

    workers = [threading.Thread(target=spin, name=f"decode_{k}") for k in range(2)]
    for w in workers:
        w.start()
    ready.wait()
    try:
        deadline = time.monotonic() + 60
        while (spent := by_role(thread_cpu(os.getpid())).get("decode", 0.0)) < 0.5:
            assert time.monotonic() < deadline, f"decode threads at {spent} s"
            time.sleep(0.05)
        keys = [k for k in thread_cpu(os.getpid()) if k.startswith("decode_")]
        assert sorted(k.split("/")[0] for k in keys) == ["decode_0", "decode_1"]
        assert all(k.split("/")[1].isdigit() for k in keys)  # 'name/tid'
    finally:
        stop.set()
        for w in workers:
            w.join()


def test_roles_sum_the_threads_that_share_a_name() -> None:
    threads = {"decode_0/11": 1.0, "decode_1/12": 2.0, "batcher-0/13": 0.5, "vit-engine/10": 0.25}
    assert by_role(threads) == {"decode": 3.0, "batcher": 0.5, "vit-engine": 0.25}
