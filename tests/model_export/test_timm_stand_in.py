"""The stand-in torchvision: enough for `import timm`, and loud if anything actually uses it."""

from __future__ import annotations

import sys

import pytest

from tests.model_export.timm_reference import STAND_INS, import_timm


def test_timm_loads_and_the_stand_in_refuses_real_use() -> None:
    import_timm()
    torchvision = sys.modules["torchvision"]
    if not str(torchvision.__file__).startswith(str(STAND_INS)):
        pytest.skip("a real torchvision is installed; timm uses it")
    from torchvision._unavailable import StandInError  # type: ignore[import-not-found]
    from torchvision.datasets import CIFAR10  # type: ignore[import-not-found]
    from torchvision.ops.misc import FrozenBatchNorm2d  # type: ignore[import-not-found]

    for use in (lambda: FrozenBatchNorm2d(8), lambda: CIFAR10("data")):
        with pytest.raises(StandInError, match="test stand-in"):
            use()
    assert str(STAND_INS) not in sys.path  # only for the import: nothing else finds it later
