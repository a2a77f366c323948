"""deploy/kserve: the InferenceService is valid (its KServe fields against the committed schema,
its pod fields against the Kubernetes API schemas, offline) and runs the same pod as deploy/k8s:
same image, probes, GPU request, settings, security and drain."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from deployfiles import ROOT, load_yaml
from test_k8s import VERSIONS

from service.settings import Settings

SCHEMA = json.loads((ROOT / "tests/deploy/schemas/kserve-inferenceservice.json").read_text())
# The predictor's own fields; the rest of it is a Kubernetes PodSpec (containers are both: the
# schema only names the serving one).
EXTENSION = set(SCHEMA["$defs"]["predictor"]["properties"]) - {"containers"}
SAME_AS_K8S = (
    "image", "ports", "env", "resources", "startupProbe", "livenessProbe", "readinessProbe",
    "lifecycle", "securityContext", "volumeMounts",
)  # fmt: skip


@pytest.fixture(scope="module")
def isvc() -> dict[str, Any]:
    return dict(load_yaml("deploy/kserve/inferenceservice.yaml"))


def pod_spec(isvc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in isvc["spec"]["predictor"].items() if k not in EXTENSION}


def validate(isvc: dict[str, Any], version: str) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(isvc)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec(isvc)}
    kubernetes_validate.validate(pod, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_inference_service_is_valid(isvc: dict[str, Any], version: str) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    validate(isvc, version)


@pytest.mark.parametrize(
    "where, key",
    [
        ((), "specs"),
        (("spec", "predictor"), "minReplica"),  # not KServe's, so checked as a (bad) PodSpec field
        (("spec", "predictor", "containers", 0), "livenesProbe"),
        (("metadata", "annotations"), "serving.kserve.io/deploymentMode"),
    ],
)
def test_validation_catches_misspelt_fields_and_bad_values(
    isvc: dict[str, Any], where: tuple[str | int, ...], key: str
) -> None:
    broken = copy.deepcopy(isvc)
    node: Any = broken
    for step in where:
        node = node[step]
    node[key] = "Rawdeployment" if key in node else {}
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(broken, VERSIONS[-1])


def test_runs_the_same_pod_as_the_kubernetes_deployment(
    isvc: dict[str, Any], compose: dict[str, Any]
) -> None:
    deployment = load_yaml("deploy/k8s/deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (k8s,) = pod["containers"]
    predictor = isvc["spec"]["predictor"]
    (served,) = predictor["containers"]
    assert served["image"] == compose["services"]["api"]["image"] == "vit-service:gpu"
    k8s = {**k8s, "image": served["image"]}  # kustomize sets the tag on the deployment's image
    assert {k: served.get(k) for k in SAME_AS_K8S} == {k: k8s.get(k) for k in SAME_AS_K8S}
    for key in ("securityContext", "tolerations", "volumes", "terminationGracePeriodSeconds"):
        assert predictor[key] == pod[key], key
    template = deployment["spec"]["template"]["metadata"]["annotations"]
    assert predictor["annotations"] == template  # scraped by the same Prometheus rules


def test_serves_on_the_settings_port_with_a_gpu_and_real_settings(
    isvc: dict[str, Any], routes: set[str], setting_variables: set[str], default_settings: Settings
) -> None:
    (served,) = isvc["spec"]["predictor"]["containers"]
    assert served["ports"][0]["containerPort"] == default_settings.port
    assert served["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {var["name"] for var in served["env"]} <= setting_variables
    probes = {served[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe")}
    assert {f"GET {path}" for path in probes} <= routes
    assert {"POST /v2/models/{name}/infer", "GET /v2/health/ready"} <= routes
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
