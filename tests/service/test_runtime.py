"""A front's one readiness state, read from the instance's shared state: the real engine server
in a thread (its warm-up held or broken through the Engine seam), a front connected to it over
the real channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from engines import SlowToWarm, WarmUpFails
from hosted import engine_thread

from service.channel.front_side import ENGINE_GONE
from service.settings import Settings
from vit_core.errors import NotReady


async def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


@pytest.fixture
def settings(tiny_bundle: Path) -> Settings:
    return Settings(bundle=tiny_bundle, providers="cpu", max_batch_size=2, drain_timeout_s=5)


def test_ready_follows_the_engine_warming_up_then_this_front_draining(settings: Settings) -> None:
    engine = SlowToWarm(settings.bundle)
    with engine_thread(settings, engine) as hosted:
        runtime = hosted.runtime(settings)

        async def scenario() -> None:
            assert (runtime.ready, runtime.alive) == (False, True)
            await runtime.start()
            runs = len(engine.warm_up_steps(2))  # 2 graphs × 2 sizes, × 2 with one-core sessions
            assert runtime.status().startswith(f"warming up: 0 of {runs} ")
            engine.release.set()
            await wait_for(lambda: runtime.ready)
            assert runtime.status() == "ready" and hosted.state.phase == "ready"
            runtime.begin_drain()  # SIGTERM: this front says not-ready at once
            assert not runtime.ready and runtime.status() == "the service is shutting down"
            await runtime.close()

        asyncio.run(scenario())


def test_a_failed_warm_up_is_final_and_says_restart(settings: Settings) -> None:
    with engine_thread(settings, WarmUpFails(settings.bundle)) as hosted:
        runtime = hosted.runtime(settings)

        async def scenario() -> None:
            await runtime.start()
            await wait_for(lambda: hosted.state.phase == "failed")
            assert not runtime.alive and not runtime.ready
            assert runtime.status() == "warm-up failed (see the log); this instance needs a restart"
            with pytest.raises(NotReady):
                runtime.check_room()
            await runtime.close()

        asyncio.run(scenario())


def test_ready_means_every_front_is_up(settings: Settings) -> None:
    with engine_thread(settings, fronts=2) as hosted:
        first = hosted.runtime(settings, index=0)

        async def scenario() -> None:
            await first.start()
            await wait_for(lambda: hosted.state.phase == "ready")
            assert not first.ready
            assert first.status() == "another front of this instance is not up"
            second = hosted.runtime(settings, index=1)
            await second.start()
            assert first.ready and second.ready
            second.begin_drain()  # one front draining: the instance is not ready anywhere
            assert not first.ready and not second.ready
            await second.close()
            await first.close()

        asyncio.run(scenario())


def test_a_gone_engine_makes_the_front_unhealthy_and_refuse_at_once(settings: Settings) -> None:
    settings = settings.model_copy(update={"drain_timeout_s": 1, "drain_delay_s": 0})
    with engine_thread(settings) as hosted:
        runtime = hosted.runtime(settings)
        loop = asyncio.new_event_loop()
        loop.run_until_complete(runtime.start())
        loop.run_until_complete(wait_for(lambda: runtime.ready))
    # the block ended: the engine drained and closed every channel
    loop.run_until_complete(wait_for(lambda: not runtime.alive))
    assert not runtime.ready and runtime.status() == ENGINE_GONE
    with pytest.raises(NotReady, match="the engine has stopped"):
        runtime.check_room()
    with pytest.raises(NotReady, match="the engine has stopped"):
        _ = runtime.engine
    loop.run_until_complete(runtime.close())
    loop.close()
