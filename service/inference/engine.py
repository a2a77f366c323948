"""ONNX Runtime sessions for a bundle's graphs: provider choice, the batch lanes, warm-up.

Provider policy (VIT_PROVIDERS): "cpu" uses the CPU; "cuda" uses CUDA or refuses to start; "auto"
uses CUDA when a session can actually be created on it and otherwise says so in one log line and
runs on the CPU. ONNX Runtime itself falls back silently when the CUDA libraries are missing, so
the check is on the providers the session reports, not on the ones asked for.

The engine owns its lanes: each a batch buffer (engine_io.HostBuffer) and a binding per graph, so
that as many batches as there are lanes can be in flight at once. The batcher's worker for a lane
writes each image's row into that lane's buffer and `run_rows` binds its first B rows where they
lie.

Lanes on a CPU: one per usable core by default, and each graph is opened twice. A batch that runs
alone (no other lane busy, nothing queued or decoding) runs on every usable core, as a lone image
needs for its latency; batches that run beside others run on one core each (a second session with
one intra-op thread). Why: a run spread over every core meets at a barrier after each operator
(layer norms, softmax, the small matmuls of one head), and under load the decode threads and the
fronts hold the cores it waits for, so one lane on two threads left ~6 % of a 2-core machine idle
and served ViT-Ti/16 at 0.76–1.00× the naive server. Runs on one core each meet no barrier:
in-process 66 images/s against 64 (batch 4), and end to end +22 % at 8 and 32 connections,
1.05–1.11× the naive server, with the lone image's latency kept (docs/benchmarks.md, "one core per
batch"). The every-core session's threads spin between operators until the run ends: a batch
alone has the cores to itself, and waking them from sleep cost a lone image 2–5 ms. What the
lanes cost: each graph's weights twice in memory. On a GPU one lane is the default;
bench/gpu.sh measures two the day a GPU is lent.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.inference import gpu
from service.inference.engine_io import (
    BatchBuffer,
    BoundRunner,
    CudaOptions,
    GraphReplayRunner,
    HostBuffer,
    Row,
)
from service.os_names import name_thread
from service.settings import MAX_LANES
from vit_core.bundle import FAST, INPUT, OUTPUTS, BundleError, BundleManifest, Role

log = logging.getLogger(__name__)

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
# The largest batch the engine may choose when none is pinned: a GPU keeps gaining to 128–256
# (ViT-B/16 fp16 on an A100 peaks at 256); a CPU peaks at a few (ViT-Ti/16 on 2 cores: 4; the
# demo model's 16 within 1 % of its 64), and one core per batch gains nothing past 1 (34 images/s
# at 1, 29 at 8), where a larger size only measured noise and cost a warm-up of minutes.
AUTO_LIMIT = {CUDA: 256, CPU: 16}
CPU_MAX = "/sys/fs/cgroup/cpu.max"  # cgroup v2: "<quota> <period>" in µs, or "max <period>"
MEASURE_S = 0.3  # per candidate batch size, in WINDOWS windows (a run per lane at least in each)
# The best window kept: what slows one is the machine's other work (a front starting), not the
# graph's; on a CPU the sizes differ by less than one disturbed window does.
WINDOWS = 2
MEASURE_RUNS = 10  # per lane and window, at most
DROP = 0.8  # two sizes in a row serving under this fraction of the best end the measuring
_NP_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "uint8": np.dtype(np.uint8),
}

Outputs = dict[str, np.ndarray]
Runner = Callable[[np.ndarray], list[np.ndarray]]


class EngineError(RuntimeError):
    """The graphs cannot run as configured (e.g. CUDA demanded but unavailable); `setting` is
    the one to change."""

    def __init__(self, message: str, setting: str = "providers") -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class Lane:
    """One batch in flight: the buffer its rows are written into and, per graph, the runner that
    binds them where they lie: on every core when the batch runs alone, on one core when it runs
    beside others (the same runners when the engine has no one-core sessions). A lane is used by
    one thread at a time."""

    buffer: BatchBuffer
    runners: dict[str, Runner]
    beside: dict[str, Runner]

    def runner(self, graph: str, alone: bool) -> Runner:
        return (self.runners if alone else self.beside)[graph]


class Engine:
    """One session per graph role ("fast", "explain"), shared by its lanes, and on a CPU with
    several lanes a second, one-core session per role for batches run beside others: lane i is
    run by one thread at a time, different lanes at once."""

    def __init__(
        self,
        folder: Path,
        manifest: BundleManifest,
        providers: str = "auto",
        *,
        max_batch_size: int | None = None,
        cuda: CudaOptions | None = None,
        device_rows: bool = False,
        lanes: int | None = None,
    ) -> None:
        """device_rows: images are decoded on the GPU (device_decode.py): on CUDA the batch
        buffers are then device memory, which they are resized into. lanes: batches in flight at
        once; None: one per usable core on a CPU, one on a GPU (the module's docstring: why)."""
        self.manifest = manifest
        cuda = cuda or CudaOptions()
        self.sessions: dict[str, ort.InferenceSession] = {}
        cuda_built = CUDA in ort.get_available_providers()  # the onnxruntime-gpu wheel
        if cuda_built and providers != "cpu" and hasattr(ort, "preload_dlls"):
            # The CUDA and cuDNN libraries of the gpu extra are pip wheels (nvidia-*): outside the
            # image nothing puts them on the loader's path, and ORT would fall back to the CPU.
            ort.preload_dlls()
        requested: list[Any] = [CPU]
        if cuda_built and providers != "cpu":
            requested = [(CUDA, cuda.provider_options()), CPU]
        if providers == "cuda" and not cuda_built:
            raise EngineError(
                "VIT_PROVIDERS=cuda, but this onnxruntime has no CUDA provider "
                "(install the gpu extra: onnxruntime-gpu)"
            )
        cpu_lanes = lanes or default_cpu_lanes()
        # Where the engine will also have one-core sessions, this one runs only batches alone,
        # so its threads may spin (_session). Not known yet, so not done, where CUDA was asked
        # for and the session falls back to the CPU.
        spin = requested == [CPU] and cpu_lanes > 1
        for role, graph in manifest.graphs.items():
            try:
                session = _session(folder / graph.file, requested, every_core_threads(), spin)
            except BundleError as e:
                if len(requested) > 1 and cuda.cuda_graphs:  # the graph, or its capture?
                    raise EngineError(f"VIT_CUDA_GRAPHS=true: {e}", "cuda_graphs") from e
                raise
            _check_io(session, role, folder / graph.file)
            if providers == "cuda" and session.get_providers()[0] != CUDA:
                raise EngineError(
                    "VIT_PROVIDERS=cuda, but ONNX Runtime could not create a CUDA session: "
                    + gpu.why_no_cuda()
                )
            self.sessions[role] = session
        self.provider = next(iter(self.sessions.values())).get_providers()[0]
        if providers == "auto" and self.provider != CUDA:
            # With the GPU wheel CUDA was expected: say what stopped it (the driver, most often).
            why = f" ({gpu.why_no_cuda()})" if cuda_built else ""
            log.warning("CUDA is not available%s; running on the CPU (%s)", why, CPU)
        on_cuda = self.provider == CUDA
        lanes = (lanes or 1) if on_cuda else cpu_lanes
        # Batches beside others on one core each (a CPU with several lanes), by graph role.
        self.one_core: dict[str, ort.InferenceSession] = {}
        if not on_cuda and lanes > 1:
            for role, graph in manifest.graphs.items():
                self.one_core[role] = _session(folder / graph.file, [CPU], threads=1)
        self.input_dtype = _NP_DTYPES[manifest.pixels.dtype]  # every graph takes the same pixels
        if on_cuda and device_rows and cuda.cuda_graphs:  # a replay reads its own input
            raise EngineError(
                "VIT_CUDA_GRAPHS=true replays host rows; with VIT_DECODE=device the rows "
                "are on the GPU already: turn one of them off",
                "cuda_graphs",
            )
        if on_cuda and cuda.cuda_graphs and lanes > 1:  # one captured graph per batch size
            raise EngineError(
                f"VIT_CUDA_GRAPHS=true replays one batch at a time; VIT_ENGINE_LANES={lanes}",
                "cuda_graphs",
            )
        # Only what the service reads is fetched: an output nobody serves is never copied out.
        self._outputs: dict[str, list[str]] = {r: list(OUTPUTS[r]) for r in manifest.graphs}
        # Rows for the largest batch the engine may run: a pinned size, or the largest it may
        # choose from when it measures its graphs (batch_sizes.py).
        rows = max_batch_size or AUTO_LIMIT[self.provider]
        self.lanes = [self._lane(rows, on_cuda, device_rows, cuda) for _ in range(lanes)]

    def _lane(self, rows: int, on_cuda: bool, device_rows: bool, cuda: CudaOptions) -> Lane:
        row = tuple(self.manifest.pixels.shape(self.manifest.image_hw))
        buffer: BatchBuffer = HostBuffer(rows, row, self.input_dtype, on_cuda)
        if on_cuda and device_rows:
            from service.inference.device_decode import DeviceBuffer

            buffer = DeviceBuffer(rows, row, self.input_dtype)
        runners: dict[str, Runner] = {
            graph: GraphReplayRunner(self.sessions[graph], names)
            if on_cuda and cuda.cuda_graphs
            else BoundRunner(self.sessions[graph], names, "cuda" if on_cuda else "cpu")
            for graph, names in self._outputs.items()
        }
        beside: dict[str, Runner] = {
            graph: BoundRunner(self.one_core[graph], names, "cpu")
            for graph, names in self._outputs.items()
            if graph in self.one_core
        }
        return Lane(buffer, runners, beside or runners)

    @property
    def providers(self) -> list[str]:
        """The providers the sessions actually run on, in priority order."""
        return list(next(iter(self.sessions.values())).get_providers())

    @property
    def capacity(self) -> int:
        """The most rows a batch may have: a batch buffer's (every lane's is the same size)."""
        return self.lanes[0].buffer.shape[0]

    def host_rows(self, lane: int) -> np.ndarray:
        """(capacity, *row) as the graphs take it, e.g. (B, H, W, 3) uint8, in host memory: the
        lane's buffer itself, or (when it is on the GPU) zeros of its shape for warming up."""
        buffer = self.lanes[lane].buffer
        if isinstance(buffer, HostBuffer):
            return buffer.array
        return np.zeros(buffer.shape, buffer.dtype)

    def run_rows(
        self, graph: str, rows: Sequence[Row], lane: int = 0, alone: bool = True
    ) -> Outputs:
        """A batch on `lane`: each row written into its row of the lane's buffer (a copy of a
        host row, or a device row resized into place), then the graph run on the first len(rows)
        rows where they lie → every output the service reads, as float32 arrays (B, ...).
        alone: no other batch runs now, so this one may take every core."""
        buffer = self.lanes[lane].buffer
        if len(rows) > buffer.shape[0]:
            raise ValueError(f"a batch of {len(rows)} for a buffer of {buffer.shape[0]} rows")
        for index, row in enumerate(rows):
            if isinstance(row, np.ndarray):
                buffer.put(index, row)
            else:
                row.write(buffer, index)
        if isinstance(buffer, HostBuffer):
            return self.run(graph, buffer.array[: len(rows)], lane, alone)
        runner = self.lanes[lane].runners[graph]
        assert isinstance(runner, BoundRunner), "CUDA graphs replay host rows only"
        shape = [len(rows), *buffer.shape[1:]]
        values = runner.run_at(buffer.device, buffer.address(0), buffer.dtype, shape)
        return self._as_outputs(graph, values)

    def run(self, graph: str, pixels: np.ndarray, lane: int = 0, alone: bool = True) -> Outputs:
        """pixels (B, *row) as the graphs take them, best the first B rows of the lane's
        `host_rows` → every output the service reads, as float32 arrays (B, ...)."""
        x = np.ascontiguousarray(pixels, self.input_dtype)  # the buffer's rows: as they are
        return self._as_outputs(graph, self.lanes[lane].runner(graph, alone)(x))

    def _as_outputs(self, graph: str, values: list[np.ndarray]) -> Outputs:
        names = self._outputs[graph]
        return {n: np.asarray(v, np.float32) for n, v in zip(names, values, strict=True)}

    def measure(
        self, candidates: list[int], stop: threading.Event, seconds: float = MEASURE_S
    ) -> dict[int, float]:
        """Images per second of the fast graph at each candidate batch size, smallest first, with
        every lane running batches of that size at once. It stops after two sizes in a row serve
        clearly less than the best so far (a larger one would only cost memory); the arena they
        grew is given back at the end."""
        measured: dict[int, float] = {}
        lanes = range(len(self.lanes))
        with ThreadPoolExecutor(len(self.lanes), "measure", name_thread) as pool:
            for size in candidates:
                if stop.is_set() or size > self.capacity:
                    break
                list(pool.map(lambda n: self._run_beside(FAST, self._zeros(n, size), n), lanes))  # noqa: B023
                window = seconds / WINDOWS
                measured[size] = max(self._window(pool, size, window) for _ in range(WINDOWS))
                best, last_two = max(measured.values()), list(measured.values())[-2:]
                if len(measured) > 2 and all(rate < DROP * best for rate in last_two):
                    break
        self._release_arena()
        return measured

    def _window(self, pool: ThreadPoolExecutor, size: int, seconds: float) -> float:
        """Images/s of every lane running batches of `size` at once for `seconds`."""
        start = threading.Barrier(len(self.lanes))
        lanes = range(len(self.lanes))
        runs = list(pool.map(lambda n: self._runs(n, size, seconds, start), lanes))
        images = size * sum(count for _, _, count in runs)
        return images / (max(end for _, end, _ in runs) - min(begin for begin, _, _ in runs))

    def _run_beside(self, graph: str, x: np.ndarray, lane: int) -> Outputs:
        """A run while every lane runs (measuring, warming up): alone only if there is one."""
        return self.run(graph, x, lane, alone=len(self.lanes) == 1)

    def _zeros(self, lane: int, size: int) -> np.ndarray:
        x = self.host_rows(lane)[:size]
        x[...] = 0
        return x

    def _runs(
        self, lane: int, size: int, seconds: float, start: threading.Barrier
    ) -> tuple[float, float, int]:
        """Runs of `size` on `lane` for `seconds` (one at least, MEASURE_RUNS at most), begun
        with the other lanes' → (started, ended, runs). The first run of each lane, before,
        paid for allocations and kernel choices."""
        x = self._zeros(lane, size)
        start.wait()
        started = time.perf_counter()
        runs = 0
        while runs < MEASURE_RUNS and (runs < 1 or time.perf_counter() < started + seconds):
            self._run_beside(FAST, x, lane)
            runs += 1
        return started, time.perf_counter(), runs

    def _release_arena(self) -> None:
        """One small run that shrinks ONNX Runtime's arenas to what is in use: the largest sizes
        measured need not stay resident if they are not chosen."""
        options = ort.RunOptions()
        device = "gpu:0" if self.provider == CUDA else "cpu:0"
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", device)
        session = self.sessions[FAST]
        session.run(list(self._outputs[FAST]), {INPUT: self.host_rows(0)[:1]}, options)

    def warm_up_steps(self, max_batch_size: int) -> list[tuple[str, int, bool]]:
        """(graph, batch size, alone) of warm-up's runs one at a time: every graph at every
        size, largest first, on each of its sessions (every core; one core, if it has one)."""
        alone = [True, False] if self.one_core else [True]
        sizes = range(max_batch_size, 0, -1)
        return [(g, b, a) for g in self.sessions for a in alone for b in sizes]

    def warm_up(
        self,
        max_batch_size: int,
        stop: threading.Event,
        progress: Callable[[int, int], None] | None = None,
    ) -> bool:
        """Run every graph at every batch size, largest first; False if stopped part-way.

        Largest first: the memory arena grows to its peak once, and CUDA picks its kernels for
        every shape before a request can pay for it.
        """
        zeros = self.host_rows(0)
        if max_batch_size > len(zeros):
            raise ValueError(f"warm-up to {max_batch_size} rows; the batch buffer has {len(zeros)}")
        zeros[...] = 0
        steps = self.warm_up_steps(max_batch_size)
        started = time.perf_counter()
        for done, (graph, size, a) in enumerate(steps, start=1):
            if stop.is_set():
                return False
            self.run(graph, zeros[:size], alone=a)
            if progress:
                progress(done, len(steps))
        if len(self.lanes) > 1:  # every lane at once: the arena holds what concurrent batches take
            with ThreadPoolExecutor(len(self.lanes), "warm-up", name_thread) as pool:
                for graph in self.sessions:
                    runs = [(graph, zeros[:max_batch_size], n) for n in range(len(self.lanes))]
                    list(pool.map(lambda run: self._run_beside(*run), runs))
        log.info(
            "warmed %d graphs × batch sizes 1..%d (%d lanes) in %.1f s",
            len(self.sessions),
            max_batch_size,
            len(self.lanes),
            time.perf_counter() - started,
        )
        return True


def batch_candidates(limit: int) -> list[int]:
    """1, 2, 4, … up to `limit` (and `limit` itself): the sizes worth measuring."""
    sizes = [1 << i for i in range(limit.bit_length()) if 1 << i <= limit]
    return sizes if sizes[-1] == limit else [*sizes, limit]


def choose_batch_size(measured: dict[int, float], within: float = 0.95) -> int:
    """The smallest measured size that serves within `within` of the best images/s: a larger
    batch that gains almost nothing still makes every image in it wait for the whole batch."""
    best = max(measured.values())
    return min(size for size, rate in measured.items() if rate >= within * best)


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, bounded by a cgroup v2 CPU quota (a
    container started with --cpus 2 on a 16-core host may use 2)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = Path(CPU_MAX).read_text().split()
        if quota != "max":
            return max(1, min(cores or 1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 file (not Linux, cgroup v1): the affinity
        pass
    return cores or 1


def default_cpu_lanes() -> int:
    """VIT_ENGINE_LANES unset on a CPU: one per usable core, at most MAX_LANES."""
    return min(usable_cores(), MAX_LANES)


def every_core_threads() -> int:
    """Intra-op threads for a batch that runs alone: ONNX Runtime's default (0: one per physical
    core of the machine) unless the process may use fewer CPUs than the machine has (a quota, an
    affinity), where threads beyond those would only wait for each other: then one per usable."""
    usable = usable_cores()
    return usable if usable < (os.cpu_count() or usable) else 0


@functools.cache
def _shared_cpu_arena() -> None:
    """One CPU memory arena for every session of the process, grown by what is asked for.

    Each session would otherwise keep an arena of its own at its own peak (the fast graph's and
    the explain graph's, added up), grown in powers of two. Shared and grown as requested, the
    demo model's engine holds 623 MiB after batches of 32 on both graphs instead of 974, at the
    same speed (bench/memory.py; docs/settings.md, "Memory ceiling")."""
    config = ort.OrtArenaCfg({"arena_extend_strategy": 1, "max_mem": 0})  # 1: kSameAsRequested
    cpu = ort.OrtMemoryInfo(
        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
    )
    ort.create_and_register_allocator(cpu, config)


def _session(
    path: Path, providers: list[Any], threads: int = 0, spin: bool = False
) -> ort.InferenceSession:
    """threads: ONNX Runtime's intra-op threads (0: its default, one per physical core).
    spin: they wait for the next operator spinning, not asleep, until the run ends."""
    _shared_cpu_arena()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Graphs arrive fused by the exporter; ORT_ENABLE_ALL adds its own layout optimisations.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads take the cores that decode the next batch's images: on for a session
    # that runs batches under load, the front-end benchmark fell from 261 to 198 images/s per
    # core. A batch alone has the cores to itself: waking them from sleep at each operator cost
    # ViT-Ti/16's lone image 2–5 ms (p50 23 → 21 ms end to end, 25 → 20 in-process), and the
    # spinning no CPU per run, as they stop at the run's end (docs/benchmarks.md, "a lone batch
    # spins").
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.add_session_config_entry("session.use_env_allocators", "1")
    # Memory patterns (one preplanned block per input shape) were planned again by each thread
    # that ran a shape: warm-up's thread, then the batcher's, +720 MiB at batch 32 for the demo
    # model, with no speed to show for it on the CPU.
    options.enable_mem_pattern = False
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # ORT raises its own types (InvalidProtobuf, Fail, ...) for bad graphs
        raise BundleError(f"{path}: ONNX Runtime cannot load this graph ({e})") from e


def _check_io(session: ort.InferenceSession, role: Role, path: Path) -> None:
    """The graph itself, not just model.json, must take INPUT and answer the role's outputs."""
    inputs = [i.name for i in session.get_inputs()]
    outputs = {o.name for o in session.get_outputs()}
    missing = [n for n in OUTPUTS[role] if n not in outputs]
    if inputs != [INPUT] or missing:
        raise BundleError(
            f"{path}: the graph takes {inputs} and lacks {missing or 'nothing'}; the service "
            f"feeds [{INPUT!r}] and reads {list(OUTPUTS[role])}"
        )
