"""The Kubernetes Deployment, started for real: deploy/k8s-cpu (deploy/k8s with the CPU image and
no GPU) rendered by tests/deploy/kustomize.py and run by `podman kube play` with the CPU image
that `make test-image` built. It must pass its startup and readiness probes, classify every image
in examples/, run with the manifest's user, read-only root, capabilities, ports, memory and
environment, and on deletion run its preStop hook, drain and exit 0 within
terminationGracePeriodSeconds; `podman kube down` then leaves nothing behind.

What podman does not do that Kubernetes does, and what this test does about each:
- probes: podman has no readiness probe, and turns an httpGet liveness or startup probe into a
  HEALTHCHECK that runs `curl` inside the container (podman before 4.6 also cannot resolve a
  named port and asks for port 0). The image has no curl, so that check always fails, and where
  systemd runs podman's health timers it restarts the container over and over. The probes are
  left out of the copy podman plays; the test runs them from outside, as the kubelet does, with
  the manifest's paths, port, period, timeout and thresholds (startup until it passes, then
  readiness until it passes, then liveness once);
- preStop: podman runs no lifecycle hooks; the test runs the hook's command in the container;
- the grace period: `podman kube down` before podman 5.1 stops a pod with SIGKILL at once
  (exit 137 within 0.2 s, seen with Debian bookworm's 4.3.1), and only podman 4.7 and later read
  terminationGracePeriodSeconds at all. The test deletes the pod as the kubelet does: the preStop
  hook, then SIGTERM with the rest of the grace period before SIGKILL (`podman pod stop --time`);
  `podman kube down` then removes the pod and its emptyDir;
- Service and HorizontalPodAutoscaler: podman ignores both kinds (it plays Pods, Deployments and
  other workloads, ConfigMaps, Secrets and PersistentVolumeClaims). They are played anyway; the
  test reaches the pod on the container port the Service targets, published on a free hostPort
  on 127.0.0.1 (before 4.7 podman publishes every containerPort on the same port of every host
  address);
- scheduling: cpu requests, replicas (the HPA's), node affinity (none in the CPU overlay), the
  rollout strategy and automountServiceAccountToken mean nothing on one host. podman applies the
  memory limit and request (as the cgroup's limit and reservation), the security contexts, the
  environment (the optional secret is absent, so VIT_API_KEY is unset) and the emptyDir /tmp
  (a volume, not tmpfs; sizeLimit is not enforced); for seccompProfile RuntimeDefault podman's
  default profile applies (it reads no seccompProfile field), which the test sees is on;
- names: the Deployment and its volumes are renamed for the run, so runs side by side never meet.

`make test-image` runs this file after building the CPU image; elsewhere it skips.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from container import ENGINE, IMAGE, READY_TIMEOUT, Container, engine, needs_image
from deployfiles import ROOT
from kustomize import build
from net import free_port

pytestmark = [
    needs_image,
    pytest.mark.skipif(ENGINE != "podman", reason="podman kube play needs podman as the engine"),
    pytest.mark.skipif(not IMAGE.endswith(":cpu"), reason="the CPU overlay runs the CPU image"),
]
OVERLAY = ROOT / "deploy" / "k8s-cpu"
EXAMPLES = ROOT / "examples"
BROKEN = {"truncated.jpg": "invalid_image"}  # examples/ holds one truncated JPEG on purpose
KUBELET_ONLY = ("startupProbe", "livenessProbe", "readinessProbe", "lifecycle")


@dataclass
class Pod:
    id: str
    api: Container  # the Deployment's one container
    deployment: dict[str, Any]  # as rendered from the overlay, probes and hooks included
    yaml_path: Path

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.deployment["spec"]["template"]["spec"])

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.spec["containers"]
        return dict(container)

    def probe(self, kind: str) -> bool:
        """One run of the container's probe as the kubelet runs it: success is an HTTP status
        from 200 to 399 within timeoutSeconds."""
        spec = self.container[kind]
        get = spec["httpGet"]
        assert get.get("scheme", "HTTP") == "HTTP" and "host" not in get
        (port,) = self.container["ports"]  # the one published, on self.api.url
        assert get["port"] in (port["name"], port["containerPort"])
        try:
            status = httpx.get(self.api.url + get["path"], timeout=spec.get("timeoutSeconds", 1))
        except httpx.HTTPError:
            return False
        return 200 <= status.status_code < 400


def for_podman(docs: list[dict[str, Any]], port: int, suffix: str) -> list[dict[str, Any]]:
    """What `podman kube play` gets: the rendered documents, with the Deployment's probes and
    hooks taken out (the test runs them), the container port published on 127.0.0.1:port, and
    the Deployment and its volumes renamed with suffix."""
    docs = copy.deepcopy(docs)
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    deployment["metadata"]["name"] += f"-{suffix}"
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    for field in KUBELET_ONLY:
        container.pop(field, None)
    (http,) = container["ports"]
    http.update(hostPort=port, hostIP="127.0.0.1")
    for volume in spec.get("volumes", []):
        for mount in container.get("volumeMounts", []):
            if mount["name"] == volume["name"]:
                mount["name"] += f"-{suffix}"
        volume["name"] += f"-{suffix}"
    return docs


def inspect_pod(pod_id: str) -> dict[str, Any]:
    found = json.loads(engine("pod", "inspect", pod_id).stdout)
    return dict(found[0] if isinstance(found, list) else found)  # a list from podman 5 on


def running(pod: Pod) -> bool:
    return pod.api.state(".State.Running") == "true"


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return build(OVERLAY)


@pytest.fixture(scope="module")
def pod(rendered: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    (deployment,) = [doc for doc in rendered if doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE, "the overlay names the image make test-image built"
    port, suffix = free_port(), uuid.uuid4().hex[:8]
    path = tmp_path_factory.mktemp("kube") / "vit-service.yaml"
    path.write_text(yaml.safe_dump_all(for_podman(rendered, port, suffix), sort_keys=False))
    try:
        played = engine("kube", "play", str(path), timeout=300)
        pod_id = played.stdout.split("Pod:")[1].split()[0]
        inspected = inspect_pod(pod_id)
        (api,) = [c for c in inspected["Containers"] if c["Id"] != inspected["InfraContainerID"]]
        yield Pod(pod_id, Container(api["Name"], f"http://127.0.0.1:{port}"), deployment, path)
    finally:
        engine("kube", "down", str(path), check=False)


@pytest.fixture(scope="module")
def started(pod: Pod) -> dict[str, float]:
    """The kubelet's start: the startup probe every periodSeconds until it passes, killing the
    container after failureThreshold failures; then the readiness probe every periodSeconds until
    it passes. Seconds from `kube play` to each."""
    begun = time.monotonic()
    startup = pod.container["startupProbe"]
    time.sleep(startup.get("initialDelaySeconds", 0))
    failures = 0
    while not pod.probe("startupProbe"):
        failures += 1
        assert running(pod), f"the container exited before its startup probe:\n{pod.api.logs()}"
        assert failures < startup.get("failureThreshold", 3), (
            f"startup probe failed {failures} times; the kubelet kills it:\n{pod.api.logs()}"
        )
        time.sleep(startup.get("periodSeconds", 10))
    times = {"started": time.monotonic() - begun}
    while not pod.probe("readinessProbe"):
        assert running(pod), f"the container exited before it was ready:\n{pod.api.logs()}"
        assert time.monotonic() - begun < READY_TIMEOUT, f"never ready:\n{pod.api.logs()}"
        time.sleep(pod.container["readinessProbe"].get("periodSeconds", 10))
    times["ready"] = time.monotonic() - begun
    return times


def say(capsys: pytest.CaptureFixture[str], message: str) -> None:
    with capsys.disabled():
        print(f"\nkube play: {message}", end="")


def test_passes_its_probes(
    pod: Pod, started: dict[str, float], capsys: pytest.CaptureFixture[str]
) -> None:
    assert pod.probe("livenessProbe")
    assert pod.api.state(".RestartCount") == "0"
    startup, ready = started["started"], started["ready"]
    say(capsys, f"startup probe passed at {startup:.1f} s, readiness at {ready:.1f} s")


def test_classifies_the_examples(pod: Pod, started: dict[str, float]) -> None:
    images = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in {".jpg", ".png"})
    shapes = [name for name in images if name not in BROKEN]
    files = [("file", (name, (EXAMPLES / name).read_bytes())) for name in shapes]
    answer = httpx.post(f"{pod.api.url}/classify", files=files, params={"top_k": 1}, timeout=60)
    assert answer.status_code == 200, answer.text
    labels = [result["predictions"][0]["label"] for result in answer.json()["results"]]
    assert labels == [Path(name).stem for name in shapes]
    for name, code in BROKEN.items():
        files = [("file", (name, (EXAMPLES / name).read_bytes()))]
        answer = httpx.post(f"{pod.api.url}/classify", files=files, timeout=60)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == code


def test_runs_as_the_manifest_declares(pod: Pod, started: dict[str, float]) -> None:
    """User and group, read-only root with a writable emptyDir /tmp, no capabilities, no
    privilege escalation, a seccomp filter, the memory limit and request, the published port,
    the environment."""
    security, pod_security = pod.container["securityContext"], pod.spec["securityContext"]
    assert pod.api.exec("id", "-u").stdout.strip() == str(pod_security["runAsUser"])
    assert pod.api.exec("id", "-g").stdout.strip() == str(pod_security["runAsGroup"])
    assert security["readOnlyRootFilesystem"] is True
    assert pod.api.exec("touch", "/app/probe").returncode != 0, "the root is read-only"
    (tmp,) = [m["mountPath"] for m in pod.container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert pod.api.exec("touch", f"{tmp}/probe").returncode == 0, "the emptyDir is writable"

    status = dict(
        line.split(":\t", 1) for line in pod.api.exec("cat", "/proc/1/status").stdout.splitlines()
    )
    assert security["capabilities"]["drop"] == ["ALL"]
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == 0
    assert security["allowPrivilegeEscalation"] is False
    assert status["NoNewPrivs"].strip() == "1"
    assert pod.spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert status["Seccomp"].strip() == "2", "a seccomp filter is on"

    memory = pod.container["resources"]
    assert pod.api.state(".HostConfig.Memory") == str(quantity(memory["limits"]["memory"]))
    assert pod.api.state(".HostConfig.MemoryReservation") == str(
        quantity(memory["requests"]["memory"])
    )

    (port,) = pod.container["ports"]
    published = inspect_pod(pod.id)["InfraConfig"]["PortBindings"]
    assert set(published) == {f"{port['containerPort']}/tcp"}

    environ = pod.api.exec("cat", "/proc/1/environ").stdout.split("\0")
    env = dict(var.split("=", 1) for var in environ if var)
    declared = {var["name"]: var.get("value") for var in pod.container["env"]}
    assert {name: env.get(name) for name in declared} == {
        **declared,
        "VIT_API_KEY": None,  # secretKeyRef, optional: no secret vit-service here
    }


def quantity(text: str) -> int:
    """A Kubernetes memory quantity in bytes (the binary suffixes the manifests use)."""
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(text[:-2]) * suffixes[text[-2:]] if text[-2:] in suffixes else int(text)


def test_deleting_the_pod_drains_within_the_grace_period(
    pod: Pod, started: dict[str, float], capsys: pytest.CaptureFixture[str]
) -> None:
    """Last: it deletes the pod. The kubelet's order: the preStop hook (the pod still serves, as
    endpoints are withdrawn), then SIGTERM with what is left of the grace period (at least 2 s)
    before SIGKILL; readiness fails at once; exit code 0 after a clean drain."""
    grace = pod.spec["terminationGracePeriodSeconds"]
    hook = pod.container["lifecycle"]["preStop"]["exec"]["command"]
    begun = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        pre_stop = pool.submit(pod.api.exec, *hook)
        time.sleep(1)
        files = [("file", ("star.jpg", (EXAMPLES / "star.jpg").read_bytes()))]
        answer = httpx.post(f"{pod.api.url}/classify", files=files, timeout=60)
        assert not pre_stop.done(), "answered while the preStop hook ran"
        assert pre_stop.result().returncode == 0, pre_stop.result().stderr
    assert answer.status_code == 200, answer.text
    left = max(math.ceil(grace - (time.monotonic() - begun)), 2)
    with subprocess.Popen([ENGINE, "pod", "stop", f"--time={left}", pod.id]) as stop:
        saw = set()
        while stop.poll() is None and 503 not in saw:
            try:
                saw.add(httpx.get(f"{pod.api.url}/readyz", timeout=1).status_code)
            except httpx.TransportError:
                saw.add(0)  # closed
            time.sleep(0.05)
        assert stop.wait(grace + 30) == 0
    stopped = time.monotonic() - begun
    logs = pod.api.logs()
    assert 503 in saw, f"readiness kept passing while draining: {saw}"
    assert pod.api.state(".State.ExitCode") == "0", logs
    assert stopped <= grace, f"{stopped:.1f} s, past terminationGracePeriodSeconds {grace}"
    assert "Application shutdown complete" in logs
    assert not [line for line in logs.splitlines() if " ERROR " in line or "Traceback" in line]

    volumes = [m["Name"] for m in json.loads(engine("inspect", pod.api.name).stdout)[0]["Mounts"]]
    engine("kube", "down", str(pod.yaml_path))
    assert engine("pod", "exists", pod.id, check=False).returncode != 0
    for volume in volumes:
        assert engine("volume", "exists", volume, check=False).returncode != 0, volume
    say(capsys, f"deleted: preStop {hook}, drained, exit code 0, {stopped:.1f} s of {grace} s")
