"""Per-request accounting as plain ASGI (no body buffering): the request metrics, and every
timing header, named here and nowhere else.

    X-Total-Time-Ms       arrival → response start, every answer (RequestMetrics)
    X-Queue-Time-Ms       the longest any of the request's images waited for a batch  } answers
    X-Inference-Time-Ms   ONNX Runtime time of the batches its images rode in         } that ran:
                          the route sets timing_headers(its pipeline outcome)
"""

from __future__ import annotations

import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.channel.messages import Outcome
from service.metrics import Metrics


def timing_headers(outcome: Outcome) -> dict[str, str]:
    """What an inference answer says about where its time went (the pipeline's own figures)."""
    return {
        "X-Queue-Time-Ms": f"{outcome.queue_s * 1000:.2f}",
        "X-Inference-Time-Ms": f"{outcome.inference_s * 1000:.2f}",
    }


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app raises before answering, the server error handler says 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                elapsed_ms = (time.perf_counter() - started) * 1000
                headers.append("X-Total-Time-Ms", f"{elapsed_ms:.2f}")
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            endpoint = _endpoint(scope)
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_duration.labels(endpoint).observe(time.perf_counter() - started)


def _endpoint(scope: Scope) -> str:
    """The route's path template; unmatched paths share one label (no cardinality blow-up)."""
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    return str(scope["path"]) if "endpoint" in scope else "unmatched"
