"""deploy/k8s: valid against the Kubernetes API schemas (kubernetes-validate, offline), and wired
to the service's routes, port, settings, image user and metrics."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import kubernetes_validate
import pytest
import yaml
from deployfiles import ROOT, Stage, cuda_kernels_run_on, load_yaml, lock_pins
from kustomize import build

from service.inference.gpu import MIN_DRIVER
from service.settings import Providers, Settings

K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes still commonly run, and the newest schema the package ships.
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def validate(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)  # strict: unknown fields are errors


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return dict(load_yaml("deploy/k8s/deployment.yaml"))


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(api)


@pytest.fixture(scope="module")
def env(container: dict[str, Any]) -> dict[str, Any]:
    return {var["name"]: var.get("value") for var in container["env"]}


@pytest.fixture(scope="module")
def adapter_rule() -> dict[str, Any]:
    config_map = load_yaml("deploy/k8s/prometheus-adapter/config.yaml")
    (rule,) = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    return dict(rule)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        validate(doc, version)


def test_validation_catches_a_misspelt_field(deployment: dict[str, Any]) -> None:
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, VERSIONS[-1])


def test_kustomization_lists_every_manifest_of_the_app() -> None:
    """All but the adapter's rule, which lives in the adapter's namespace and is applied apart."""
    kustomization = load_yaml("deploy/k8s/kustomization.yaml")
    top_level = {p.name for p in MANIFESTS if p.parent == K8S}
    assert set(kustomization["resources"]) == top_level


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl (kustomize) is not installed")
def test_kustomize_build_is_valid_kubernetes() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], check=True, capture_output=True, text=True
    ).stdout
    docs = list(yaml.safe_load_all(built))
    assert {doc["kind"] for doc in docs} == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for doc in docs:
        validate(doc, VERSIONS[-1])
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "vit-service:gpu"  # the compose file's gpu image name


def test_probes_hit_real_routes_on_the_service_port(
    container: dict[str, Any], env: dict[str, Any], routes: set[str], default_settings: Settings
) -> None:
    (port,) = container["ports"]
    assert port["containerPort"] == default_settings.port == int(env["VIT_PORT"])
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe")}
    probes["readinessProbe"] = container["readinessProbe"]["httpGet"]
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    assert {probe["port"] for probe in probes.values()} == {port["name"]}
    assert {"GET /healthz", "GET /readyz"} <= routes


def test_termination_outlasts_the_drain(
    deployment: dict[str, Any], container: dict[str, Any], env: dict[str, Any]
) -> None:
    """SIGTERM comes after the preStop sleep; the queue then has VIT_DRAIN_TIMEOUT_S to empty."""
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(command[1]) + float(env["VIT_DRAIN_TIMEOUT_S"])


def test_requests_a_gpu_and_refuses_to_run_without_one(
    container: dict[str, Any], env: dict[str, Any], setting_variables: set[str]
) -> None:
    resources = container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert env["VIT_PROVIDERS"] == "cuda"
    assert set(env) <= setting_variables, "a misspelt VIT_ variable is silently ignored"


def test_runs_as_the_image_user_without_privileges(
    deployment: dict[str, Any], container: dict[str, Any], stages: dict[str, Stage]
) -> None:
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    uid, _, gid = stages["serve"].args("USER")[-1].partition(":")
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid))
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert "/tmp" in {mount["mountPath"] for mount in container["volumeMounts"]}


def test_prometheus_annotations_point_at_the_metrics_route(
    deployment: dict[str, Any], container: dict[str, Any], routes: set[str]
) -> None:
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    assert "GET " + annotations["prometheus.io/path"] in routes


def test_service_selects_the_pods_and_targets_the_http_port(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    service = load_yaml("deploy/k8s/service.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == container["ports"][0]["name"]


def test_hpa_scales_the_deployment_on_the_adapters_metric(
    deployment: dict[str, Any], adapter_rule: dict[str, Any], metric_labels: dict[str, set[str]]
) -> None:
    hpa = load_yaml("deploy/k8s/hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == adapter_rule["name"]["as"]
    series = adapter_rule["seriesQuery"].split("{")[0].strip("'\"")
    assert series in metric_labels and series == "vit_inflight_images"
    assert set(adapter_rule["resources"]["overrides"]) == {"namespace", "pod"}


def schedulable(affinity: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a node with these labels satisfies required node affinity (terms ORed, the
    expressions of a term ANDed), for the operators the manifest uses."""
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]

    def holds(expression: dict[str, Any]) -> bool:
        value, operator = labels.get(expression["key"]), expression["operator"]
        if value is None:
            return False
        if operator == "In":
            return value in expression["values"]
        assert operator == "Gt", f"unexpected operator {operator}"
        return int(value) > int(expression["values"][0])

    return any(all(map(holds, term["matchExpressions"])) for term in terms["nodeSelectorTerms"])


def node(driver: int, compute: tuple[int, int]) -> dict[str, str]:
    """The labels GPU feature discovery puts on a node."""
    return {
        "nvidia.com/cuda.driver-version.major": str(driver),
        "nvidia.com/gpu.compute.major": str(compute[0]),
        "nvidia.com/gpu.compute.minor": str(compute[1]),
    }


# Pascal, Volta, Turing, Ampere (A100, A10, Orin), Ada, Hopper, Blackwell (B200, B300, Thor,
# RTX 50 / RTX PRO, GB10): the capabilities a cluster may hold, each side of every boundary.
COMPUTE = [(6, 1), (7, 0), (7, 5), (8, 0), (8, 6), (8, 7), (8, 9), (9, 0)]
COMPUTE += [(10, 0), (10, 3), (11, 0), (12, 0), (12, 1)]


@pytest.mark.parametrize("compute", COMPUTE)
@pytest.mark.parametrize("driver_offset", [-1, 0, 40])
def test_pods_land_only_on_nodes_that_can_run_the_gpu_image(
    deployment: dict[str, Any], compute: tuple[int, int], driver_offset: int
) -> None:
    cuda_major = int(lock_pins("gpu")["nvidia-cuda-runtime"][0].split(".")[0])
    driver = MIN_DRIVER[cuda_major] + driver_offset
    affinity = deployment["spec"]["template"]["spec"]["affinity"]
    expected = driver >= MIN_DRIVER[cuda_major] and cuda_kernels_run_on(compute)
    assert schedulable(affinity, node(driver, compute)) == expected
    assert not schedulable(affinity, {}), "a node without feature discovery labels"


# deploy/k8s-cpu: the same app for CPU-only nodes, a kustomize overlay of deploy/k8s. Rendered by
# tests/deploy/kustomize.py (test_kustomize.py), which `make test-image` uses to run it under
# `podman kube play` (test_kube_play.py).
CPU = ROOT / "deploy" / "k8s-cpu"


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    assert len({doc["kind"] for doc in docs}) == len(docs)
    return {doc["kind"]: doc for doc in docs}


@pytest.mark.parametrize("version", VERSIONS)
def test_cpu_overlay_is_valid_kubernetes(version: str) -> None:
    for doc in build(CPU):
        validate(doc, version)


def test_cpu_overlay_is_the_deployment_without_the_gpu(setting_variables: set[str]) -> None:
    """Only what a CPU node needs differs from deploy/k8s: no GPU node affinity, toleration or
    nvidia.com/gpu resource, the CPU provider, the CPU image; the Service and HPA are the same."""
    base, cpu = by_kind(build(K8S)), by_kind(build(CPU))
    assert set(cpu) == set(base) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    expected = copy.deepcopy(base["Deployment"])
    pod = expected["spec"]["template"]["spec"]
    del pod["affinity"], pod["tolerations"]
    (api,) = pod["containers"]
    api["image"] = "vit-service:cpu"  # the compose file's cpu image name
    for resources in api["resources"].values():
        del resources["nvidia.com/gpu"]
    (providers,) = [var for var in api["env"] if var["name"] == "VIT_PROVIDERS"]
    providers["value"] = "cpu"
    assert cpu["Deployment"] == expected
    assert {k: v for k, v in cpu.items() if k != "Deployment"} == {
        k: v for k, v in base.items() if k != "Deployment"
    }
    assert "nvidia.com/gpu" not in yaml.safe_dump(cpu["Deployment"])
    assert "cpu" in get_args(Providers)
    assert {var["name"] for var in api["env"]} <= setting_variables


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl (kustomize) is not installed")
@pytest.mark.parametrize("folder", [K8S, CPU], ids=["k8s", "k8s-cpu"])
def test_the_python_renderer_matches_kustomize(folder: Path) -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(folder)], check=True, capture_output=True, text=True
    ).stdout
    kustomized = by_kind(list(yaml.safe_load_all(built)))  # kustomize orders by kind
    assert by_kind(build(folder)) == kustomized
