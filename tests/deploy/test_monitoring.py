"""Prometheus and Grafana files: they parse, and every series and label their PromQL names is one
the service really exports (service/metrics.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from deployfiles import ROOT, load_yaml

DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "vit-service.json"
# Labels Prometheus adds to every scraped series.
SCRAPE_LABELS = {"job", "instance"}


def panel_queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def template_queries(dashboard: dict[str, Any]) -> list[str]:
    return [variable["definition"] for variable in dashboard["templating"]["list"]]


def check_promql(expr: str, exported: dict[str, set[str]]) -> list[str]:
    """Problems with expr: unknown vit_ series, or labels no series in it carries."""
    names = set(re.findall(r"\bvit_\w+", expr))
    problems = [f"{name} is not exported" for name in names - set(exported)]
    known = set().union(*(exported.get(name, set()) for name in names), SCRAPE_LABELS)
    matchers = re.findall(r"\{([^}]*)\}", expr)
    used = {label for m in matchers for label in re.findall(r"(\w+)\s*!?[=~]", m)}
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        used |= {label.strip() for label in group.split(",") if label.strip()}
    used |= set(re.findall(r"label_values\(\s*\w+\s*,\s*(\w+)\s*\)", expr))
    problems += [f"label {label} is on none of {sorted(names)}" for label in used - known]
    return problems


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def test_check_promql_catches_unknown_series_and_labels(metric_labels: dict[str, set[str]]) -> None:
    assert check_promql("sum by (endpoint) (rate(vit_requests_total[1m]))", metric_labels) == []
    assert check_promql("rate(vit_request_total[1m])", metric_labels)  # misspelt
    assert check_promql("vit_queue_depth", metric_labels) == []
    assert check_promql("vit_queue_depth_total", metric_labels)  # a gauge has no _total
    assert check_promql('sum by (reason) (vit_requests_total{status="200"})', metric_labels)


def test_dashboard_queries_use_only_exported_series_and_labels(
    dashboard: dict[str, Any], metric_labels: dict[str, set[str]]
) -> None:
    queries = panel_queries(dashboard) + template_queries(dashboard)
    problems = {q: p for q in queries if (p := check_promql(q, metric_labels))}
    assert not problems


def test_dashboard_covers_what_an_operator_asks_first(dashboard: dict[str, Any]) -> None:
    """Throughput, latency percentiles, batch size, queue depth, errors by reason."""
    queries = "\n".join(panel_queries(dashboard))
    for needle in (
        "rate(vit_images_total",
        "histogram_quantile(0.99, sum by (le, endpoint) (rate(vit_request_duration_seconds_bucket",
        "vit_batch_size_bucket",
        "vit_queue_depth",
        "vit_inflight_images",
        "sum by (reason) (rate(vit_rejections_total",
        "sum by (reason) (rate(vit_failures_total",
    ):
        assert needle in queries


def test_dashboard_panels_use_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    (source,) = load_yaml("docker/grafana/provisioning/datasources/prometheus.yml")["datasources"]
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    uids |= {t["datasource"]["uid"] for panel in dashboard["panels"] for t in panel["targets"]}
    assert uids == {source["uid"]}
    assert source["url"] == "http://prometheus:9090"  # the compose service name
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "Grafana needs unique panel ids"


def test_prometheus_config_scrapes_the_metrics_route(routes: set[str]) -> None:
    config = load_yaml("docker/prometheus/prometheus.yml")
    (job,) = config["scrape_configs"]
    assert "GET " + job["metrics_path"] in routes
    assert set(config) == {"global", "scrape_configs"}
