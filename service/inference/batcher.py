"""Dynamic batching: concurrent requests' images share ONNX Runtime calls. Knows nothing of HTTP.

    reservation = batcher.reserve(n)          # room for n images, or Overloaded / NotReady
    ... decode and preprocess the n images ...
    future = reservation.submit("fast", images)   # concurrent.futures.Future[BatchResult]

A worker thread per engine lane takes, per graph, as many queued images as there are up to
max_batch_size, so up to `lanes` batches run at once, and tells the engine whether its batch runs
alone (no other lane busy, nothing queued or on its way), which on a CPU lets it take every core
(engine.py: why the others take one each). A batch that is not full waits for more only while
more are on their way (room reserved by requests still decoding), and at most max_wait_s from its
oldest image: a lone request on an idle engine runs at once, and whatever queued while the engine
was busy runs as soon as it is free. It hands the batch's rows to the engine, which writes each
into its row of the lane's preallocated buffer (pinned on CUDA, or on the GPU itself when the
images were decoded there: no per-batch allocation, no np.stack) and runs one call on the first B
rows; each request gets its own answers, in order, and a request bigger than a batch is split and
put back together (its parts may run on two lanes at once). Room is reserved before decoding, so
max_queue_images bounds everything accepted and not yet running, and an overloaded service
refuses before spending a cycle on decoding.

Every future is completed: with a result; with BatchFailed when its batch raised (the worker
carries on); with WorkerDied when a worker itself died (the batcher is then dead for good and
`alive` is False); or by its caller cancelling it (timeout, client gone), which drops its images
from the queue before they run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Literal

import numpy as np

from service.inference.batch_request import BatchResult, Entry, Request
from service.inference.engine_io import Row
from service.metrics import Metrics
from service.os_names import name_thread
from vit_core.errors import BatchFailed, NotReady, Overloaded, WorkerDied

log = logging.getLogger(__name__)

# (graph, the batch's B rows, lane, alone) → every output, (B, ...): the engine writes the rows
# into the lane's batch buffer and runs the graph on them where they lie (Engine.run_rows)
RunFn = Callable[[str, Sequence[Row], int, bool], Mapping[str, np.ndarray]]
State = Literal["new", "running", "closing", "closed", "dead"]


class Batcher:
    def __init__(
        self,
        run: RunFn,
        *,
        graphs: Iterable[str],
        max_batch_size: int,
        max_wait_s: float,
        max_queue_images: int,
        metrics: Metrics,
        lanes: int = 1,
        on_death: Callable[[], None] | None = None,
        on_held: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self._on_death = on_death  # told once, when the worker dies
        self._on_held = on_held  # told every change of the images held (the fronts read it)
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.max_queue_images = max_queue_images
        self._metrics = metrics
        self._queues: dict[str, deque[Entry]] = {g: deque() for g in graphs}
        # Condition's default lock is an RLock: failing a future runs its done-callback, which
        # takes the lock again when that happens under it.
        self._cond = threading.Condition()
        self._held = 0  # images reserved or queued, not yet taken into a batch
        self._running: dict[int, list[Entry]] = {}  # by lane: the batches in ONNX Runtime now
        self._state: State = "new"
        self._threads = [
            threading.Thread(target=self._work, args=(lane,), name=f"batcher-{lane}", daemon=True)
            for lane in range(lanes)
        ]
        for g in self._queues:
            metrics.queue_depth.labels(g).set(0)

    # -- the request side ------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Taking work: started, not draining, and every worker thread is running."""
        return self._state == "running" and all(t.is_alive() for t in self._threads)

    @property
    def state(self) -> State:
        return self._state

    @property
    def unavailable(self) -> str:
        """Why work is refused ("" while running)."""
        return "" if self.alive else _UNAVAILABLE[self._state] or "the batch worker is not running"

    def start(self) -> None:
        with self._cond:
            if self._state != "new":
                raise RuntimeError(f"cannot start a batcher that is {self._state}")
            self._state = "running"
        for thread in self._threads:
            thread.start()

    def check_room(self) -> None:
        """Refuse now if not even one more image would be taken: cheaper than reading a request
        only to refuse it, which is what keeps 429s fast when the server is swamped."""
        with self._cond:
            if self._state != "running":
                raise NotReady(_UNAVAILABLE[self._state])
            if self._held >= self.max_queue_images:
                raise Overloaded(f"{self._held} images are queued, the limit; retry shortly")

    def reserve(self, n: int) -> Reservation:
        with self._cond:
            if self._state != "running":
                raise NotReady(_UNAVAILABLE[self._state])
            if self._held + n > self.max_queue_images:
                raise Overloaded(
                    f"{self._held} images are queued and {n} more would pass the limit of "
                    f"{self.max_queue_images}; retry shortly"
                )
            self._hold(n)
        return Reservation(self, n)

    def _submit(self, graph: str, images: Sequence[Row]) -> Future[BatchResult]:
        future: Future[BatchResult] = Future()
        request = Request(graph, len(images), future)
        with self._cond:
            if self._state not in ("running", "closing"):
                self._hold(-request.n)
                raise NotReady(_UNAVAILABLE[self._state])
            queue = self._queues[graph]
            queue.extend(Entry(request, i, px) for i, px in enumerate(images))
            self._metrics.queue_depth.labels(graph).set(len(queue))
            self._cond.notify_all()
        future.add_done_callback(lambda _: self._forget(request))
        return future

    def _release(self, n: int) -> None:
        with self._cond:
            self._hold(-n)
            self._cond.notify_all()

    def _hold(self, images: int) -> None:
        """Images held (reserved or queued) change by `images` (lock held)."""
        self._held += images
        if self._on_held is not None:
            self._on_held(self._held)

    def _forget(self, request: Request) -> None:
        """A finished request's images still queued (cancelled, or failed in an earlier part)."""
        with self._cond:
            if request.queued == 0:
                return
            queue = self._queues[request.graph]
            kept = deque(e for e in queue if e.request is not request)
            self._hold(len(kept) - len(queue))
            request.queued = 0
            self._queues[request.graph] = kept
            self._metrics.queue_depth.labels(request.graph).set(len(kept))
            self._cond.notify_all()

    def close(self, timeout: float) -> int:
        """Stop taking work, run what is queued (no more waiting for full batches), then stop.

        Whatever is still queued after `timeout` seconds is failed with NotReady; how many
        requests that was is returned (0: a clean drain).
        """
        with self._cond:
            if self._state == "new":
                self._state = "closed"
                return 0
            if self._state == "running":
                self._state = "closing"
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = self._drain_queues()
            if self._state != "dead":
                self._state = "closed"
            self._cond.notify_all()
        if left:
            log.warning("shutdown: %d queued requests did not finish in %.0f s", len(left), timeout)
        for request in left:
            request.fail(NotReady("the service is shutting down"))
        return len(left)

    # -- the worker --------------------------------------------------------------------------

    def _work(self, lane: int) -> None:
        name_thread()  # `batcher-0` in top -H
        try:
            while (batch := self._next_batch(lane)) is not None:
                self._run_batch(lane, *batch)
        except BaseException:  # a bug or a fatal error in the worker itself, not in a batch
            log.critical("the batch worker died; failing every waiting request", exc_info=True)
            self._die()

    def _next_batch(self, lane: int) -> tuple[str, list[Entry], bool] | None:
        with self._cond:
            while True:
                if self._state in ("closed", "dead"):
                    return None
                graph, wait = self._due(time.monotonic())
                if graph is not None:
                    return graph, *self._take(graph, lane)
                if self._state == "closing" and self._held == 0:
                    return None
                self._cond.wait(wait)

    def _due(self, now: float) -> tuple[str | None, float | None]:
        """The graph whose batch should run now (oldest head first), else how long to wait."""
        # Company is worth waiting for only if it is coming: room held by requests still decoding.
        # Draining, or nothing reserved beyond what is queued: run what there is now.
        incoming = self._held - sum(len(q) for q in self._queues.values())
        flush = self._state == "closing" or incoming == 0
        due: str | None = None
        wait: float | None = None
        for graph, queue in self._queues.items():
            if not queue:
                continue
            head = queue[0].request.submitted
            deadline = head + self.max_wait_s
            if flush or len(queue) >= self.max_batch_size or now >= deadline:
                if due is None or head < self._queues[due][0].request.submitted:
                    due = graph
            else:
                wait = deadline - now if wait is None else min(wait, deadline - now)
        return due, wait

    def _take(self, graph: str, lane: int) -> tuple[list[Entry], bool]:
        """The batch, and whether it runs alone: no other lane busy, and nothing left queued or
        still decoding that another lane would start on while it runs."""
        queue = self._queues[graph]
        batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch_size))]
        for entry in batch:
            entry.request.queued -= 1
        self._hold(-len(batch))
        alone = not self._running and self._held == 0
        self._running[lane] = batch
        self._metrics.queue_depth.labels(graph).set(len(queue))
        return batch, alone

    def _run_batch(self, lane: int, graph: str, entries: list[Entry], alone: bool) -> None:
        self._infer(lane, graph, entries, alone)
        with self._cond:  # not on a BaseException: _die fails this batch's requests too
            self._running.pop(lane, None)

    def _infer(self, lane: int, graph: str, entries: list[Entry], alone: bool) -> None:
        # A request cancelled between the take and now is not worth a row of compute.
        live = [e for e in entries if not e.request.future.done()]
        requests = list(dict.fromkeys(e.request for e in live))  # unique, in order
        if not live:
            return
        started = time.monotonic()
        wait = self._metrics.queue_wait.labels(graph)
        for e in live:
            wait.observe(started - e.request.submitted)
        try:
            outputs = self._run(graph, [e.pixels for e in live], lane, alone)
            for name, out in outputs.items():
                if out.shape[0] != len(live):
                    raise ValueError(f"output {name} has {out.shape[0]} rows for {len(live)}")
        except Exception:
            log.exception("a batch of %d images on the %s graph failed", len(live), graph)
            self._metrics.failures.labels("batch_error").inc()
            for request in requests:
                request.fail(BatchFailed("inference failed for the batch holding this request"))
            return
        elapsed = time.monotonic() - started
        self._metrics.inference_duration.labels(graph).observe(elapsed)
        self._metrics.batch_size.labels(graph).observe(len(live))
        with self._cond:  # a request split over two lanes' batches is put together by both
            for row, e in enumerate(live):
                e.request.deliver(e.index, outputs, row)
            for request in requests:
                request.finish_batch(started, elapsed)

    def _die(self) -> None:
        with self._cond:
            self._state = "dead"
            running = [e for batch in self._running.values() for e in batch]
            victims = list(dict.fromkeys(e.request for e in running))
            victims += [r for r in self._drain_queues() if r not in victims]
            self._running = {}
            self._cond.notify_all()
        self._metrics.failures.labels("worker_died").inc()
        if self._on_death is not None:  # before the answers: a client told 500 then sees 503
            self._on_death()
        for request in victims:
            request.fail(WorkerDied("the batch worker stopped"))

    def _drain_queues(self) -> list[Request]:
        """Empty every queue (lock held); the requests whose images were in them."""
        requests: dict[Request, None] = {}
        for graph, queue in self._queues.items():
            for entry in queue:
                requests[entry.request] = None
                entry.request.queued = 0
            self._hold(-len(queue))
            queue.clear()
            self._metrics.queue_depth.labels(graph).set(0)
        return list(requests)


_UNAVAILABLE: dict[State, str] = {
    "new": "the model is still warming up",
    "running": "",
    "closing": "the service is shutting down",
    "closed": "the service is shutting down",
    "dead": "the batch worker has stopped; this instance needs a restart",
}


class Reservation:
    """Room for n images in the queue, held while they are decoded; a context manager that gives
    the room back if the images never arrive (a bad image, a timeout)."""

    def __init__(self, batcher: Batcher, n: int) -> None:
        self._batcher, self.n, self._open = batcher, n, True

    def submit(self, graph: str, images: Sequence[Row]) -> Future[BatchResult]:
        if not self._open:
            raise RuntimeError("this reservation was already used or released")
        if len(images) != self.n:
            raise ValueError(f"reserved {self.n} images, submitted {len(images)}")
        self._open = False
        return self._batcher._submit(graph, images)

    def release(self) -> None:
        if self._open:
            self._open = False
            self._batcher._release(self.n)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
