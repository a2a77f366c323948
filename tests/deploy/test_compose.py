"""docker-compose.yml: valid by the Compose Specification's schema, and consistent with the image,
the service's settings and the monitoring files it mounts."""

from __future__ import annotations

import copy
import json
import re
from pathlib import PurePosixPath
from typing import Any

import jsonschema
import pytest
from deployfiles import ROOT, Stage, exec_form, load_yaml

from service.settings import Settings

API = ("api", "api-cpu")


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} and ${VAR}, as with none of the variables set."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m[1] or "", value)


def seconds(duration: str) -> float:
    """A Compose duration such as 1m30s."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"unreadable duration {duration}"
    return sum(float(n) * units[u] for n, u in parts)


@pytest.fixture(scope="module")
def schema() -> jsonschema.Draft7Validator:
    spec = json.loads((ROOT / "tests" / "deploy" / "schemas" / "compose-spec.json").read_text())
    return jsonschema.Draft7Validator(spec)


def test_compose_file_follows_the_compose_specification(
    schema: jsonschema.Draft7Validator, compose: dict[str, Any]
) -> None:
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in schema.iter_errors(compose)]
    assert not errors


def test_schema_check_catches_a_misspelt_key(
    schema: jsonschema.Draft7Validator, compose: dict[str, Any]
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["deploy"]["resources"]["reservations"]["devices"][0]["drivers"] = []
    assert not schema.is_valid(broken)


def test_profiles_never_start_two_apis(compose: dict[str, Any]) -> None:
    """Every service is behind a profile, and each profile runs at most one API on port 8000."""
    profiles = {name: service.get("profiles") for name, service in compose["services"].items()}
    assert profiles == {
        "api": ["gpu"],
        "api-cpu": ["cpu"],
        "prometheus": ["monitoring"],
        "grafana": ["monitoring"],
    }


def test_gpu_api_reserves_an_nvidia_gpu_and_requires_cuda(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    (device,) = api["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert api["environment"]["VIT_PROVIDERS"] == "cuda"
    assert api["build"]["args"]["FLAVOR"] == "gpu"


def test_cpu_api_needs_no_gpu(compose: dict[str, Any]) -> None:
    api = compose["services"]["api-cpu"]
    assert "deploy" not in api and "gpus" not in api and "runtime" not in api
    assert api["environment"]["VIT_PROVIDERS"] == "cpu"
    assert api["build"]["args"]["FLAVOR"] == "cpu"


@pytest.mark.parametrize("name", API)
def test_api_builds_the_serving_stage_with_a_locked_flavor(
    name: str, compose: dict[str, Any], stages: dict[str, Stage]
) -> None:
    build = compose["services"][name]["build"]
    assert build["context"] == "." and build["target"] in stages
    assert (ROOT / "docker" / f"requirements-{build['args']['FLAVOR']}.txt").is_file()
    assert compose["services"][name]["image"] == f"vit-service:{build['args']['FLAVOR']}"
    assert compose["services"][name]["platform"] == "linux/amd64"  # what the locks were made for


@pytest.mark.parametrize("name", API)
def test_api_settings_are_real_settings(
    name: str, compose: dict[str, Any], setting_variables: set[str], default_settings: Settings
) -> None:
    env = compose["services"][name]["environment"]
    assert set(env) <= setting_variables, "a misspelt VIT_ variable is silently ignored"
    assert env["VIT_PORT"] == str(default_settings.port)
    published = [interpolate(port) for port in compose["services"][name]["ports"]]
    assert published == [f"{default_settings.port}:{default_settings.port}"]


@pytest.mark.parametrize("name", API)
def test_api_mounts_a_bundle_read_only_where_vit_bundle_points(
    name: str, compose: dict[str, Any]
) -> None:
    service = compose["services"][name]
    (mount,) = service["volumes"]
    assert mount["read_only"] is True and mount["target"] == service["environment"]["VIT_BUNDLE"]
    assert interpolate(mount["source"]) == "./models/demo"  # the default: the baked-in bundle


@pytest.mark.parametrize("name", API)
def test_api_health_restart_and_graceful_stop(
    name: str, compose: dict[str, Any], stages: dict[str, Stage]
) -> None:
    service = compose["services"][name]
    (image_check,) = stages["serve"].args("HEALTHCHECK")
    assert service["healthcheck"]["test"] == ["CMD", *exec_form(image_check)]
    assert service["restart"] in ("always", "unless-stopped", "on-failure")
    drain = float(service["environment"]["VIT_DRAIN_TIMEOUT_S"])
    assert seconds(service["stop_grace_period"]) > drain, "the queue must drain before SIGKILL"


def test_prometheus_scrapes_the_api_by_its_network_alias(compose: dict[str, Any]) -> None:
    aliases = [set(compose["services"][name]["networks"]["default"]["aliases"]) for name in API]
    (job,) = load_yaml("docker/prometheus/prometheus.yml")["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    host, _, port = target.partition(":")
    assert all(host in names for names in aliases)
    assert port == compose["services"]["api"]["environment"]["VIT_PORT"]


def test_monitoring_mounts_exist_and_match_grafana_provisioning(compose: dict[str, Any]) -> None:
    binds = {}
    for name in ("prometheus", "grafana"):
        for volume in compose["services"][name]["volumes"]:
            source, target, *_ = volume.split(":")
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
                binds[target] = ROOT / source
    provider = load_yaml("docker/grafana/provisioning/dashboards/vit-service.yml")
    dashboards = binds[provider["providers"][0]["options"]["path"]]
    assert list(dashboards.glob("*.json")), "the provisioned folder holds the dashboards"
    grafana_env = compose["services"]["grafana"]["environment"]
    home = PurePosixPath(grafana_env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (binds[str(home.parent)] / home.name).is_file()


def test_plain_compose_up_starts_exactly_the_gpu_api(compose: dict[str, Any]) -> None:
    # `docker compose up` with no flags reads COMPOSE_PROFILES from .env beside the file.
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    active = set(env["COMPOSE_PROFILES"].split(","))
    started = [name for name, svc in compose["services"].items() if active & set(svc["profiles"])]
    assert started == ["api"]
