"""The batcher on its own: a numpy run function stands in for ONNX Runtime (a real seam, no mocks).

Each image is a (3, 2, 2) array filled with one number; the run function answers that number
back per row, so every answer says which image it came from.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
import pytest

from service.inference.batch_request import BatchResult
from service.inference.batcher import Batcher
from service.metrics import Metrics
from vit_core.errors import BatchFailed, NotReady, Overloaded, WorkerDied

WAIT = 10.0  # seconds a test waits for a future before calling it hung
POISON = -1.0


def image(value: float) -> np.ndarray:
    return np.full((3, 2, 2), value, np.float32)


class Fatal(BaseException):
    """What kills a worker thread (not an Exception, so no batch handler catches it)."""


class Model:
    """Records every batch, its lane and whether it ran alone; can hold the workers inside a call
    (counting how many are in it at once); fails on POISON if told to."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.batches: list[list[float]] = []
        self.lanes: list[int] = []
        self.alone: list[bool] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.fail_with = fail_with
        self._inside = threading.Condition()
        self.inside = 0  # calls in progress right now

    def __call__(
        self, graph: str, rows: Sequence[np.ndarray], lane: int, alone: bool
    ) -> Mapping[str, np.ndarray]:
        pixels = np.stack(rows)  # (B, 3, 2, 2): what the engine's buffer would hold
        values = [float(v) for v in pixels[:, 0, 0, 0]]
        with self._inside:
            self.batches.append(values)
            self.lanes.append(lane)
            self.alone.append(alone)
            self.inside += 1
            self._inside.notify_all()
        self.entered.set()
        try:
            assert self.gate.wait(WAIT)
            if self.fail_with is not None and POISON in values:
                raise self.fail_with
            return {"value": pixels[:, 0, 0, 0].copy(), "graph": np.full(len(values), len(graph))}
        finally:
            with self._inside:
                self.inside -= 1

    def wait_inside(self, calls: int) -> bool:
        """True once `calls` calls are in progress at the same time."""
        with self._inside:
            return self._inside.wait_for(lambda: self.inside >= calls, WAIT)


def make(
    model: Model,
    max_batch_size: int = 4,
    max_wait_s: float = WAIT,
    metrics: Metrics | None = None,
    lanes: int = 1,
) -> Batcher:
    """A batcher over model; max_wait_s is long unless a test needs the timer to fire."""
    return Batcher(
        model,
        graphs=("fast", "explain"),
        max_batch_size=max_batch_size,
        max_wait_s=max_wait_s,
        max_queue_images=16,
        metrics=metrics or Metrics(),
        lanes=lanes,
    )


@pytest.fixture
def model() -> Model:
    return Model()


@pytest.fixture
def batcher(model: Model) -> Iterator[Batcher]:
    b = make(model)
    b.start()
    yield b
    model.gate.set()
    b.close(timeout=WAIT)


def submit(batcher: Batcher, *values: float, graph: str = "fast") -> Future[BatchResult]:
    return batcher.reserve(len(values)).submit(graph, [image(v) for v in values])


def answer(future: Future[BatchResult]) -> list[float]:
    return [float(v) for v in future.result(WAIT).outputs["value"]]


def test_concurrent_requests_share_one_batch_and_each_gets_its_own_rows(
    batcher: Batcher, model: Model
) -> None:
    futures = [submit(batcher, v) for v in (1, 2, 3, 4)]  # a full batch: no waiting
    assert [answer(f) for f in futures] == [[1], [2], [3], [4]]
    assert model.batches == [[1, 2, 3, 4]]


def test_a_request_bigger_than_a_batch_is_split_and_put_back_in_order(
    batcher: Batcher, model: Model
) -> None:
    values = [float(v) for v in range(12)]
    future = submit(batcher, *values)
    assert answer(future) == values
    assert model.batches == [values[:4], values[4:8], values[8:]]
    assert future.result().batches == 3


def together(batcher: Batcher, *values: float) -> list[Future[BatchResult]]:
    """One image per request, all reserved before any is submitted (as requests decoding at once
    hold their room): none runs before the last arrives, unless the batch fills first."""
    reservations = [batcher.reserve(1) for _ in values]
    return [r.submit("fast", [image(v)]) for r, v in zip(reservations, values, strict=True)]


def test_a_lone_request_on_an_idle_engine_runs_without_waiting_for_company(model: Model) -> None:
    b = make(model, max_wait_s=3600)  # were the window waited out, result() would time out
    b.start()
    assert answer(submit(b, 7)) == [7]
    b.close(WAIT)


def test_a_batch_waits_for_images_still_on_their_way(model: Model) -> None:
    b = make(model, max_wait_s=3600)
    b.start()
    coming = b.reserve(1)  # a request still decoding its image
    first = submit(b, 1)
    coming_too = b.reserve(1)
    second = coming.submit("fast", [image(2)])
    coming_too.release()  # its image was bad: nothing more is coming, so the batch goes
    assert answer(first) == [1] and answer(second) == [2]
    assert model.batches == [[1, 2]]
    b.close(WAIT)


def test_a_lone_image_waits_at_most_max_wait_for_company_on_its_way(model: Model) -> None:
    b = make(model, max_wait_s=0.05)
    b.start()
    with b.reserve(1):  # announced company that never comes
        result = submit(b, 7).result(WAIT)
    assert result.outputs["value"].tolist() == [7] and result.queue_s >= 0.05
    b.close(WAIT)


def test_what_queued_while_the_engine_was_busy_runs_when_it_is_free(model: Model) -> None:
    b = make(model, max_wait_s=3600)
    b.start()
    model.gate.clear()
    running = submit(b, 0)
    assert model.entered.wait(WAIT)
    waiting = [submit(b, v) for v in (1, 2)]
    model.gate.set()
    assert [answer(f) for f in (running, *waiting)] == [[0], [1], [2]]
    assert model.batches == [[0], [1, 2]]
    b.close(WAIT)


def test_requests_are_served_first_in_first_out(batcher: Batcher, model: Model) -> None:
    model.gate.clear()
    first = submit(batcher, 0, 0, 0, 0)  # occupies the worker
    assert model.entered.wait(WAIT)
    later = [submit(batcher, v) for v in range(1, 9)]
    model.gate.set()
    assert [answer(f) for f in later] == [[v] for v in range(1, 9)]
    assert answer(first) == [0, 0, 0, 0]
    assert model.batches[1:] == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_graphs_are_batched_apart(model: Model) -> None:
    b = make(model, max_wait_s=0.2)
    b.start()
    late = b.reserve(1)  # company on its way: the fast pair waits for it
    fast = [submit(b, v) for v in (1, 2)]
    explain = [submit(b, v, graph="explain") for v in (3, 4, 5, 6)]  # full: runs at once
    assert [answer(f) for f in explain] == [[3], [4], [5], [6]]
    late.release()
    assert [answer(f) for f in fast] == [[1], [2]]
    assert model.batches == [[3, 4, 5, 6], [1, 2]]
    assert [int(f.result().outputs["graph"][0]) for f in (explain[0], fast[0])] == [7, 4]
    b.close(WAIT)


def test_a_full_queue_refuses_at_once_and_room_comes_back(batcher: Batcher) -> None:
    held = batcher.reserve(16)
    with pytest.raises(Overloaded, match="16 images are queued"):
        batcher.reserve(1)
    held.release()
    batcher.reserve(16).release()


def test_check_room_refuses_only_when_not_one_more_image_fits(batcher: Batcher) -> None:
    held = batcher.reserve(15)
    batcher.check_room()  # one more fits
    last = batcher.reserve(1)
    with pytest.raises(Overloaded, match="16 images are queued, the limit"):
        batcher.check_room()
    held.release()
    last.release()
    batcher.check_room()


def test_a_reservation_is_given_back_when_its_images_never_come(batcher: Batcher) -> None:
    with pytest.raises(ValueError), batcher.reserve(16):
        raise ValueError("a bad image")
    assert answer(submit(batcher, *range(4))) == [0, 1, 2, 3]  # room for these again


def test_a_failing_batch_fails_exactly_its_requests_and_the_worker_carries_on() -> None:
    model = Model(fail_with=RuntimeError("onnxruntime exploded"))
    b = make(model, max_batch_size=2)
    b.start()
    model.gate.clear()
    bad, neighbour = together(b, POISON, 1)  # one batch of two
    assert model.entered.wait(WAIT)
    later = submit(b, 2, 3)  # the next batch
    model.gate.set()
    for f in (bad, neighbour):
        with pytest.raises(BatchFailed):
            f.result(WAIT)
    assert answer(later) == [2, 3] and answer(submit(b, 4, 5)) == [4, 5]
    assert b.alive
    b.close(WAIT)


def test_a_dead_worker_fails_every_waiting_request_and_refuses_new_ones() -> None:
    model = Model(fail_with=Fatal())
    b = make(model, max_batch_size=1)
    b.start()
    model.gate.clear()
    running = submit(b, POISON)
    assert model.entered.wait(WAIT)
    waiting = [submit(b, v) for v in (1, 2)]
    model.gate.set()
    for f in (running, *waiting):
        with pytest.raises(WorkerDied):
            f.result(WAIT)
    assert not b.alive and b.state == "dead"
    with pytest.raises(NotReady, match="needs a restart"):
        b.reserve(1)
    b.close(WAIT)


def test_cancelled_work_is_dropped_before_it_runs(batcher: Batcher, model: Model) -> None:
    model.gate.clear()
    blocker = submit(batcher, 0, 0, 0, 0)
    assert model.entered.wait(WAIT)
    gone = submit(batcher, 99)  # its client goes away while it waits
    assert gone.cancel()
    kept = submit(batcher, 1, 2, 3, 4)
    model.gate.set()
    assert answer(kept) == [1, 2, 3, 4] and answer(blocker) == [0, 0, 0, 0]
    assert all(99 not in batch for batch in model.batches)
    batcher.reserve(16).release()  # the dropped image's room came back


def test_close_runs_what_is_queued_without_waiting_for_a_full_batch(model: Model) -> None:
    b = make(model)  # max_wait 10 s: only the drain makes this run soon
    b.start()
    future = submit(b, 5)
    b.close(WAIT)
    assert answer(future) == [5] and b.state == "closed"
    with pytest.raises(NotReady, match="shutting down"):
        b.reserve(1)


def test_close_fails_what_cannot_finish_in_time(model: Model) -> None:
    b = make(model)
    b.start()
    model.gate.clear()
    stuck = submit(b, 0, 0, 0, 0)
    assert model.entered.wait(WAIT)
    queued = submit(b, 1)
    b.close(timeout=0.05)
    with pytest.raises(NotReady, match="shutting down"):
        queued.result(WAIT)
    model.gate.set()
    assert answer(stuck) == [0, 0, 0, 0]  # the call in progress still answers


def test_nothing_is_taken_before_start(model: Model) -> None:
    b = make(model)
    with pytest.raises(NotReady, match="warming up"):
        b.reserve(1)
    with pytest.raises(NotReady, match="warming up"):
        b.check_room()
    b.close(WAIT)


def test_metrics_count_batches_and_queue_depth(model: Model) -> None:
    metrics = Metrics()
    b = make(model, metrics=metrics)
    b.start()
    model.gate.clear()
    blocker = submit(b, 0, 0, 0, 0)
    assert model.entered.wait(WAIT)
    waiting = submit(b, 1, 2)
    depth = metrics.registry.get_sample_value("vit_queue_depth", {"graph": "fast"})
    assert depth == 2
    model.gate.set()
    b.close(WAIT)  # runs the waiting pair without waiting for company
    assert answer(blocker) == [0, 0, 0, 0] and answer(waiting) == [1, 2]
    count = metrics.registry.get_sample_value("vit_batch_size_count", {"graph": "fast"})
    total = metrics.registry.get_sample_value("vit_batch_size_sum", {"graph": "fast"})
    assert (count, total) == (2, 6)


def test_a_hung_future_is_impossible_after_close(model: Model) -> None:
    b = make(model)
    b.start()
    model.gate.clear()
    futures = [submit(b, v) for v in range(6)]
    assert model.entered.wait(WAIT)
    b.close(timeout=0.01)
    model.gate.set()
    for f in futures:
        try:
            f.result(WAIT)
        except NotReady:
            pass
        except FutureTimeout:  # pragma: no cover - the failure this test exists to catch
            pytest.fail("a future was left hanging")


# -- lanes: batches in flight at once --------------------------------------------------------


def test_two_lanes_run_two_batches_at_once(model: Model) -> None:
    b = make(model, max_batch_size=2, lanes=2)
    b.start()
    model.gate.clear()
    first = submit(b, 1, 2)
    assert model.wait_inside(1)
    second = submit(b, 3, 4)  # the first lane is busy: the second takes it
    assert model.wait_inside(2)
    model.gate.set()
    assert answer(first) == [1, 2] and answer(second) == [3, 4]
    assert sorted(model.lanes) == [0, 1]
    b.close(WAIT)


def test_a_batch_runs_alone_only_with_no_other_running_queued_or_on_its_way(model: Model) -> None:
    """What lets a lone batch take every core of a CPU, and makes batches beside others take one
    each (engine.py)."""
    b = make(model, max_batch_size=2, max_wait_s=0, lanes=2)  # no waiting for the one coming
    b.start()
    assert answer(submit(b, 1)) == [1]  # nothing else: alone
    model.gate.clear()
    first = submit(b, 2)
    assert model.wait_inside(1)
    second = submit(b, 3)  # the first lane is busy: beside it
    assert model.wait_inside(2)
    model.gate.set()
    assert answer(first) == [2] and answer(second) == [3]
    decoding = b.reserve(1)  # room held by a request still decoding: another batch is coming
    assert answer(submit(b, 4)) == [4]
    decoding.release()
    assert model.alone == [True, True, False, False]
    b.close(WAIT)


def test_a_request_split_over_two_lanes_is_put_back_together_in_order(model: Model) -> None:
    b = make(model, max_batch_size=2, lanes=2)
    b.start()
    model.gate.clear()
    future = submit(b, *range(6))  # three batches of two: two of them run at once
    assert model.wait_inside(2)
    model.gate.set()
    assert answer(future) == [0, 1, 2, 3, 4, 5]
    assert future.result().batches == 3 and set(model.lanes) == {0, 1}
    b.close(WAIT)


def test_a_dead_lane_fails_the_other_lanes_work_and_the_batcher_stops() -> None:
    model = Model(fail_with=Fatal())
    b = make(model, max_batch_size=1, lanes=2)
    b.start()
    model.gate.clear()
    poisoned, *others = [submit(b, POISON), submit(b, 1)]  # one batch on each lane
    assert model.wait_inside(2)
    others += [submit(b, v) for v in (2, 3)]
    model.gate.set()
    with pytest.raises(WorkerDied):
        poisoned.result(WAIT)
    for value, f in zip((1, 2, 3), others, strict=True):
        # the other lane answers what it ran before the death; the rest fails; none hangs
        with contextlib.suppress(WorkerDied):
            assert answer(f) == [value]
    assert not b.alive and b.state == "dead"
    with pytest.raises(NotReady, match="needs a restart"):
        b.reserve(1)
    b.close(WAIT)
