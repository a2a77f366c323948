"""What the deployment files are checked against: the service's own settings and metrics."""

from __future__ import annotations

from typing import Any

import pytest
from deployfiles import Stage, dockerfile_stages, load_yaml
from prometheus_client.metrics import MetricWrapperBase

from service.app import create_app
from service.metrics import Metrics
from service.settings import Settings


@pytest.fixture(scope="session")
def stages() -> dict[str, Stage]:
    return dockerfile_stages()


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_yaml("docker-compose.yml")


@pytest.fixture(scope="session")
def default_settings() -> Settings:
    """The service's defaults, without the bundle check (no bundle is needed to read them)."""
    return Settings.model_construct()


@pytest.fixture(scope="session")
def setting_variables() -> set[str]:
    return {"VIT_" + name.upper() for name in Settings.model_fields}


@pytest.fixture(scope="session")
def metric_labels() -> dict[str, set[str]]:
    """Every series name the service exports -> the labels it carries.

    Built from the metric objects themselves: a labelled metric shows no sample until it is first
    used, so the registry alone cannot say which names and labels will exist.
    """
    exported: dict[str, set[str]] = {}
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    for metric in vars(Metrics()).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = set(metric._labelnames)
        for suffix in suffixes[metric._type]:
            exported[metric._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return exported


@pytest.fixture(scope="session")
def routes(default_settings: Settings) -> set[str]:
    """Every route of the app's OpenAPI schema, as "METHOD /path". Routes exist once the app is
    made; its lifespan, which loads a model, is not run."""
    paths = create_app(default_settings).openapi()["paths"]
    return {f"{method.upper()} {path}" for path, methods in paths.items() for method in methods}
