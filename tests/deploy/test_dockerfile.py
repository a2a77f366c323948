"""The Dockerfile, read as text: the facts the compose file, the Kubernetes manifests and the
service's own settings rely on, and a build context that holds every file it copies."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from deployfiles import ROOT, Stage, dockerignored, exec_form, load_yaml, lock_module

from service.settings import Settings

FLAVORS = ("gpu", "cpu")


def copy_sources(stage: Stage) -> list[str]:
    """Sources of the stage's COPY instructions from the build context, ${FLAVOR} expanded."""
    sources = []
    for args in stage.args("COPY"):
        if "--from=" in args:
            continue
        for src in args.split()[:-1]:
            sources += sorted({src.replace("${FLAVOR}", flavor) for flavor in FLAVORS})
    return sources


def test_stages_share_one_base_and_serve_is_the_default_target(stages: dict[str, Stage]) -> None:
    assert list(stages)[-1] == "serve"  # docker build with no --target builds the last stage
    assert {name: stage.base for name, stage in stages.items() if name not in ("", "base")} == {
        "build": "base",
        "export": "base",
        "serve": "base",
    }


def test_base_image_is_the_python_the_locks_were_resolved_for(stages: dict[str, Stage]) -> None:
    (arg,) = stages[""].args("ARG")
    assert arg.startswith("PYTHON_IMAGE=python:")
    assert re.fullmatch(rf"PYTHON_IMAGE=python:{re.escape(lock_module().PYTHON)}-slim\S*", arg)
    assert stages["base"].base == "${PYTHON_IMAGE}"


def test_serving_image_runs_as_a_numeric_non_root_user(stages: dict[str, Stage]) -> None:
    user = stages["serve"].args("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, so Kubernetes runAsNonRoot can verify it"
    assert gid.isdigit() and int(gid) != 0
    (useradd,) = [run for run in stages["base"].args("RUN") if run.startswith("useradd")]
    assert f"--uid {uid}" in useradd


def test_listens_on_all_interfaces_on_the_service_port(
    stages: dict[str, Stage], default_settings: Settings
) -> None:
    env = stages["serve"].env()
    assert env["VIT_HOST"] == "0.0.0.0"
    assert env["VIT_PORT"] == str(default_settings.port)
    assert stages["serve"].args("EXPOSE") == [str(default_settings.port)]


def test_bakes_in_the_demo_bundle_and_points_vit_bundle_at_it(stages: dict[str, Stage]) -> None:
    assert "models/demo/ /app/models/demo/" in stages["serve"].args("COPY")
    assert stages["serve"].env()["VIT_BUNDLE"] == "/app/models/demo"


def test_healthcheck_asks_readyz_on_the_configured_port(stages: dict[str, Stage]) -> None:
    (healthcheck,) = stages["serve"].args("HEALTHCHECK")
    command = exec_form(healthcheck)
    assert command[:2] == ["python", "-c"]  # no curl in a slim image
    assert "/readyz" in command[2] and "VIT_PORT" in command[2]
    assert re.search(r"--timeout=(\d+)s", healthcheck), "a hung server must fail the check"


def test_serving_stage_installs_nothing_itself(stages: dict[str, Stage]) -> None:
    """Its Python packages are exactly the build stage's venv: the locked, hash-checked set."""
    assert "--from=build /opt/venv /opt/venv" in stages["serve"].args("COPY")
    assert not any("pip" in run for run in stages["serve"].args("RUN"))
    build_runs = stages["build"].args("RUN")
    assert build_runs and all("docker/install.sh /opt/venv ${FLAVOR}" in run for run in build_runs)
    assert exec_form(stages["serve"].args("ENTRYPOINT")[0]) == ["vit-serve"]


def test_every_copied_file_is_in_the_build_context(stages: dict[str, Stage]) -> None:
    for stage in stages.values():
        for src in copy_sources(stage):
            path = ROOT / src
            assert path.exists(), f"{stage.name}: COPY {src} but there is no {src}"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                if "__pycache__" not in relative:
                    assert not dockerignored(relative), f"{relative} is ignored"


@pytest.mark.parametrize(
    "path", [".venv/bin/python", "checkpoints/demo/model.safetensors", ".git/HEAD", "data/x.png"]
)
def test_build_context_leaves_out_what_the_image_does_not_need(path: str) -> None:
    assert dockerignored(path)


def test_home_is_writable_wherever_the_image_runs_read_only(
    stages: dict[str, Stage], compose: dict[str, Any]
) -> None:
    """uid 10001 has no home and the root is read-only: HOME must lie on what compose and
    Kubernetes mount writable, or ONNX Runtime warns on every start."""
    home = Path(stages["serve"].env()["HOME"])
    (pod,) = load_yaml("deploy/k8s/deployment.yaml")["spec"]["template"]["spec"]["containers"]
    writable = {
        "compose": [Path(p) for p in compose["services"]["api"]["tmpfs"]],
        "kubernetes": [Path(m["mountPath"]) for m in pod["volumeMounts"]],
    }
    for where, mounts in writable.items():
        assert any(home.is_relative_to(m) for m in mounts), f"HOME={home} is read-only in {where}"
