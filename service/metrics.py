"""Every Prometheus metric the service exports, in one place, on a registry of its own.

A registry per app (not the process-global one) lets tests build several apps in one process and
read each one's counters from zero. An instance is several processes (service/instance.py): each
writes its samples to files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode,
set up by the supervisor before it starts anyone) and a scrape of any front sums them all:
counters and histograms add up, the queue gauges are summed over live processes, and
`vit_model_info` has one sample per serving front (a `pid` label). What cannot be summed, each
process's memory and CPU, is reported per process (`vit_process_*{process="engine"|"front-0"|…}`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

# Seconds: from a cache-hot tiny model (1 ms) to a CPU batch of ViT-B (tens of seconds).
TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(
        self,
        multiprocess: bool = False,
        processes: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        """multiprocess: every process of the instance writes its samples to files and a scrape
        sums them. processes: the instance's processes by name (state.py), whose memory and CPU
        a scrape reports one by one."""
        self.multiprocess, self._processes = multiprocess, processes
        r = self.registry = CollectorRegistry()
        if not multiprocess:  # per-process figures: they cannot be summed across workers
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.requests = Counter(
            "vit_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.request_duration = Histogram(
            "vit_request_duration_seconds",
            "Time from request arrival to response start",
            ["endpoint"],
            buckets=TIME_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "vit_queue_wait_seconds",
            "Per image: time from joining the batch queue to its batch starting",
            ["graph"],
            buckets=TIME_BUCKETS,
            registry=r,
        )
        self.preprocess_duration = Histogram(
            "vit_preprocess_duration_seconds",
            "Per image: decode, check, resize and normalise",
            buckets=TIME_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "vit_inference_duration_seconds",
            "Per batch: one ONNX Runtime call",
            ["graph"],
            buckets=TIME_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "vit_batch_size",
            "Images per ONNX Runtime call",
            ["graph"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "vit_queue_depth",
            "Images waiting for a batch",
            ["graph"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.inflight_images = Gauge(
            "vit_inflight_images",
            "Images accepted and not yet answered",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.images = Counter("vit_images", "Images answered", ["endpoint"], registry=r)
        self.rejections = Counter(
            "vit_rejections", "Requests refused or abandoned, by reason", ["reason"], registry=r
        )
        self.failures = Counter(
            "vit_failures", "Batch failures and worker deaths", ["reason"], registry=r
        )
        self.max_batch_size = Gauge(
            "vit_max_batch_size",
            "Most images per ONNX Runtime call: pinned by VIT_MAX_BATCH_SIZE, or chosen at warm-up",
            registry=r,
            multiprocess_mode="livemax",  # the engine's; a front's own sample is never set
        )
        self.model_info = Gauge(
            "vit_model_info",
            "The model being served (value is always 1)",
            ["name", "version", "provider", "precision"],
            registry=r,
            multiprocess_mode="liveall",
        )

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type (every worker's, summed)."""
        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        summed = CollectorRegistry()
        MultiProcessCollector(summed)  # type: ignore[no-untyped-call]  # every process's files
        if self._processes is not None:
            summed.register(InstanceProcesses(self._processes))
        return generate_latest(summed), CONTENT_TYPE_LATEST


class InstanceProcesses(Collector):
    """The memory and CPU of each process of the instance, read from /proc at scrape time: what a
    summed scrape cannot carry (one resident size does not add up with another's)."""

    def __init__(self, processes: Callable[[], dict[str, int]]) -> None:
        self._processes = processes

    def collect(self) -> Iterator[Metric]:
        labels = ["process", "pid"]
        memory = GaugeMetricFamily(
            "vit_process_resident_memory_bytes", "Resident memory of each process", labels=labels
        )
        cpu = CounterMetricFamily(
            "vit_process_cpu_seconds", "User + system CPU time of each process", labels=labels
        )
        for name, pid in self._processes().items():
            if (found := _proc_stat(pid)) is not None:
                memory.add_metric([name, str(pid)], found[0])
                cpu.add_metric([name, str(pid)], found[1])
        yield memory
        yield cpu


_PAGE, _TICK = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(resident bytes, CPU seconds) of a live process; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command's closing parenthesis: utime, stime are fields 12 and 13, rss 22.
    return int(fields[21]) * _PAGE, (int(fields[11]) + int(fields[12])) / _TICK
