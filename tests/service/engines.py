"""Real engines with a seam for tests: the real sessions, with warm-up held or broken."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from service.inference.engine import Engine
from vit_core.bundle import load_bundle


class SlowToWarm(Engine):
    """The real engine, whose warm-up waits for the test to let it finish."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, load_bundle(folder), "cpu")
        self.release = threading.Event()

    def warm_up(self, *args: Any, **kwargs: Any) -> bool:
        assert self.release.wait(30)
        return super().warm_up(*args, **kwargs)


class WarmUpFails(Engine):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder, load_bundle(folder), "cpu")

    def warm_up(self, *args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("out of device memory")
