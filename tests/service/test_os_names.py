"""service/os_names.py: the names Linux shows for a thread (/proc/…/comm: top -H, ps -L)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import onnxruntime as ort

from service.os_names import name_thread, threads_started_as


def names() -> dict[int, str]:
    """Every thread of this process: its id → its name."""
    return {
        int(t): Path(f"/proc/self/task/{t}/comm").read_text().strip()
        for t in os.listdir("/proc/self/task")
    }


def started_in(**kwargs: str) -> str:
    """The name a new thread has when it starts running, before it names itself."""
    seen: list[str] = []
    thread = threading.Thread(target=lambda: seen.append(names()[threading.get_native_id()]),
                              **kwargs)  # fmt: skip
    thread.start()
    thread.join()
    return seen[0]


def test_a_pool_thread_takes_its_python_name() -> None:
    seen: list[str] = []

    def work() -> None:
        name_thread()
        seen.append(names()[threading.get_native_id()])

    worker = threading.Thread(target=work, name="decode_7")
    worker.start()
    worker.join()
    assert seen == ["decode_7"]
    # without name_thread, a thread is called what the thread that started it was called
    assert started_in(name="batcher-3") == names()[threading.get_native_id()]


def test_threads_onnxruntime_starts_in_the_block_take_its_name(tiny_bundle: Path) -> None:
    mine = threading.get_native_id()
    before, own_name = set(names()), names()[mine]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 3  # a pool: two threads beside the caller's, at the least
    with threads_started_as("onnxruntime"):
        session = ort.InferenceSession(
            str(tiny_bundle / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        assert started_in() == "onnxruntime"
    new = {tid: name for tid, name in names().items() if tid not in before}
    assert len(new) >= 2 and set(new.values()) == {"onnxruntime"}, new
    assert names()[mine] == own_name  # the caller's own name is given back
    del session
