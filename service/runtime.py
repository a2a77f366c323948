"""A front at run time: one typed object holding what a request needs (the settings, the model's
manifest, the channel to the engine, the request-bytes budget, the metrics), and the one place
readiness is decided, from the instance's shared state (service/state.py).

    ready  ⇔  the engine is warm  ∧  every front of the instance is up  ∧  this one is not draining
    alive  ⇔  the engine has not failed  ∧  this front's channel to it is open

Anything but ready makes /readyz 503 with the reason, so a load balancer sends nothing here; not
alive makes /healthz 503 too, so the orchestrator restarts the instance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from service.channel.front_side import ENGINE_GONE, EngineClient
from service.edge.inputs import BodyBudget
from service.metrics import Metrics
from service.settings import Settings, memory_budgets
from service.state import SharedState
from vit_core.bundle import BundleManifest
from vit_core.errors import NotReady, Overloaded
from vit_core.memory import memory_limit

log = logging.getLogger(__name__)

CONNECT_S = 60.0  # the engine listens before any front starts; this covers a slow machine


class Runtime:
    """Built before the app; `start` (in the app's lifespan) connects to the engine."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        manifest: BundleManifest,
        state: SharedState,
        address: str,
        index: int = 0,
    ) -> None:
        self.settings, self.metrics, self.manifest = settings, metrics, manifest
        self.state, self._address, self._index = state, address, index
        self.on_engine_lost: Callable[[], None] = lambda: None  # the front's server stops
        _, body_budget = memory_budgets(settings, memory_limit())
        self.bodies = BodyBudget(body_budget)
        self._client: EngineClient | None = None
        self.draining = False
        self.abandoned = 0  # requests cut off unanswered (the drain timed out): RequestGuard counts

    @property
    def engine(self) -> EngineClient:
        if self._client is None or not self._client.alive:
            raise NotReady(ENGINE_GONE if self._client else "the service is starting")
        return self._client

    async def start(self) -> None:
        self._client = await EngineClient.connect(self._address, CONNECT_S)
        info = await self._client.info()
        m = self.manifest
        self.metrics.model_info.labels(m.name, m.version, info["providers"][0], m.precision).set(1)
        self.state.front_up(self._index, True)
        loop = asyncio.get_running_loop()
        loop.create_task(self._say_ready())
        loop.create_task(self._watch_engine(self._client))

    async def engine_info(self) -> dict[str, Any]:
        return await self.engine.info()

    def check_room(self) -> None:
        """Refuse now, before the body is read, if the engine would not take one more image:
        cheaper than reading a request only to refuse it, which keeps 429s fast under overload.
        A draining front still takes work: requests arriving while the listener stays open run."""
        if self.state.phase != "ready" or self._client is None or not self._client.alive:
            raise NotReady(self.status())
        held = self.state.held
        if held >= self.settings.max_queue_images:
            raise Overloaded(f"{held} images are queued, the limit; retry shortly")

    @property
    def ready(self) -> bool:
        return (
            not self.draining
            and self.state.phase == "ready"
            and self.state.all_fronts_up()
            and self._client is not None
            and self._client.alive
        )

    @property
    def alive(self) -> bool:
        """False only when this instance cannot recover: it needs a restart."""
        return self.state.phase != "failed" and (self._client is None or self._client.alive)

    def status(self) -> str:
        """Why the instance is not ready (or "ready")."""
        if self.state.phase == "failed":
            return f"{self.state.reason}; this instance needs a restart"
        if self._client is not None and not self._client.alive:
            return ENGINE_GONE
        if self.draining or self.state.phase in ("draining", "stopped"):
            return "the service is shutting down"
        if self.state.phase in ("starting", "warming") or self._client is None:
            done, total = self.state.warm_up
            if not total:
                return "warming up: measuring the graph at each batch size"
            return f"warming up: {done} of {total} graph × batch-size runs"
        return "ready" if self.ready else "another front of this instance is not up"

    def abandon(self) -> None:
        """A request was cut off unanswered (the server gave up on it while draining)."""
        self.abandoned += 1

    def begin_drain(self) -> None:
        """Say not-ready from now on (SIGTERM); work already accepted or still arriving runs."""
        self.draining = True
        self.state.front_up(self._index, False)

    async def close(self) -> None:
        self.begin_drain()
        if self._client is not None:
            self._client.close()

    async def _watch_engine(self, client: EngineClient) -> None:
        """An engine gone for good (not this front closing its channel) stops this front: what
        waited on it was answered 503 when the channel closed, and nothing can be served."""
        await client.lost.wait()
        if not self.draining:
            log.error("the engine's channel closed; this front stops")
            self.on_engine_lost()

    async def _say_ready(self) -> None:
        """One line when the instance can answer, with where: uvicorn's own line comes first."""
        while not self.ready:
            if self.draining or not self.alive:
                return
            await asyncio.sleep(0.1)
        if self._index == 0:
            log.info("ready: %s answers on %s", self.manifest.name, self.settings.url)
