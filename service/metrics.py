"""Every Prometheus metric the service exports, in one place, on a registry of its own.

A registry per app (not the process-global one) lets tests build several apps in one process and
read each one's counters from zero. With several workers (service/workers.py) every process writes
its samples to files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, set up by
the supervisor before the workers start) and a scrape of any worker sums them all: counters and
histograms add up, the queue gauges are summed over live workers, and `vit_model_info` has one
sample per live worker (a `pid` label), which says how many are serving.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

# Seconds: from a cache-hot tiny model (1 ms) to a CPU batch of ViT-B (tens of seconds).
TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self, multiprocess: bool = False) -> None:
        self.multiprocess = multiprocess
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
        MultiProcessCollector(summed)  # type: ignore[no-untyped-call]  # every worker's files
        return generate_latest(summed), CONTENT_TYPE_LATEST
