"""Placeholders that raise on use: classes (timm subclasses some) and functions."""

from __future__ import annotations

from typing import Any, NoReturn


class StandInError(RuntimeError):
    """Raised when code reaches a torchvision name this stand-in only pretends to have."""


def _refuse(name: str) -> NoReturn:
    raise StandInError(f"torchvision.{name} is a test stand-in; real torchvision is not installed")


def unavailable_class(name: str) -> type:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        _refuse(name)

    return type(name.rsplit(".", 1)[-1], (), {"__init__": __init__})


def unavailable_function(name: str) -> Any:
    def function(*args: Any, **kwargs: Any) -> NoReturn:
        _refuse(name)

    function.__name__ = name.rsplit(".", 1)[-1]
    return function
