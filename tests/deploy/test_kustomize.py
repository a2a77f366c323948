"""tests/deploy/kustomize.py, the small kustomize that renders deploy/k8s-cpu for podman: its JSON
patches, images and refusals (test_k8s.py compares whole builds with `kubectl kustomize`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kustomize import KustomizeError, build, json_patch

DOC = {"spec": {"list": [{"name": "a"}, {"name": "b"}], "map": {"x/y": 1, "k": "v"}}}


def test_json_patch_operations() -> None:
    patched = json_patch(
        DOC,
        [
            {"op": "test", "path": "/spec/list/1/name", "value": "b"},
            {"op": "replace", "path": "/spec/list/1/name", "value": "c"},
            {"op": "remove", "path": "/spec/map/x~1y"},
            {"op": "add", "path": "/spec/list/-", "value": {"name": "d"}},
            {"op": "add", "path": "/spec/list/0", "value": {"name": "z"}},
            {"op": "add", "path": "/spec/new", "value": 2},
        ],
    )
    assert patched == {
        "spec": {
            "list": [{"name": "z"}, {"name": "a"}, {"name": "c"}, {"name": "d"}],
            "map": {"k": "v"},
            "new": 2,
        }
    }
    assert DOC["spec"]["map"] == {"x/y": 1, "k": "v"}, "the input is left as it was"


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "test", "path": "/spec/list/0/name", "value": "b"},  # a drifted field
        {"op": "remove", "path": "/spec/missing"},
        {"op": "replace", "path": "/spec/list/5/name", "value": "x"},
        {"op": "move", "from": "/spec/map", "path": "/spec/other"},
    ],
)
def test_json_patch_refuses(operation: dict[str, str]) -> None:
    with pytest.raises(KustomizeError):
        json_patch(DOC, [operation])


def write(folder: Path, kustomization: dict[str, Any], name: str, docs: list[Any]) -> Path:
    """A kustomization.yaml and one more YAML file (its documents) in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    (folder / name).write_text(yaml.safe_dump_all(docs))
    return folder


def pod(image: str) -> dict[str, Any]:
    spec = {"containers": [{"name": "api", "image": image}], "initContainers": [{"image": image}]}
    template = {"spec": spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": template},
    }


def images(docs: list[dict[str, Any]]) -> list[str]:
    spec = docs[0]["spec"]["template"]["spec"]
    return [c["image"] for c in spec["containers"] + spec["initContainers"]]


@pytest.mark.parametrize(
    ("image", "transform", "expected"),
    [
        ("app", {"newTag": "cpu"}, "app:cpu"),
        ("app:gpu", {"newTag": "cpu"}, "app:cpu"),
        ("app:gpu", {"newName": "reg.io:5000/app"}, "reg.io:5000/app:gpu"),
        ("app@sha256:ab", {"newName": "r/app"}, "r/app@sha256:ab"),
        ("app:gpu", {"digest": "sha256:cd"}, "app@sha256:cd"),
        ("other:gpu", {"newTag": "cpu"}, "other:gpu"),
        ("reg.io:5000/app:gpu", {"newTag": "cpu"}, "reg.io:5000/app:gpu"),  # another name
    ],
)
def test_images(tmp_path: Path, image: str, transform: dict[str, str], expected: str) -> None:
    kustomization = {"resources": ["d.yaml"], "images": [{"name": "app", **transform}]}
    folder = write(tmp_path, kustomization, "d.yaml", [pod(image)])
    assert images(build(folder)) == [expected, expected]


def test_an_overlay_patches_and_retags_its_base(tmp_path: Path) -> None:
    base = {"resources": ["d.yaml"], "images": [{"name": "app", "newTag": "gpu"}]}
    write(tmp_path / "base", base, "d.yaml", [pod("app")])
    patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/name", "value": "x"}]
    overlay = {
        "resources": ["../base"],
        "images": [{"name": "app", "newTag": "cpu"}],
        "patches": [{"target": {"kind": "Deployment", "name": "web"}, "path": "p.yaml"}],
    }
    write(tmp_path / "overlay", overlay, "p.yaml", [patch])
    (built,) = build(tmp_path / "overlay")
    assert images([built]) == ["app:cpu", "app:cpu"]
    assert built["spec"]["template"]["spec"]["containers"][0]["name"] == "x"


@pytest.mark.parametrize(
    "kustomization",
    [
        {"resources": ["d.yaml"], "namePrefix": "x-"},  # a field it does not know
        {"resources": ["d.yaml"], "patches": [{"target": {"kind": "Service"}, "patch": "[]"}]},
        {"resources": ["d.yaml"], "patches": [{"patch": "spec: {}"}]},  # strategic merge
        {"resources": ["d.yaml"], "patches": [{"target": {"labelSelector": "a=b"}, "patch": "[]"}]},
    ],
)
def test_refuses_what_it_cannot_do(tmp_path: Path, kustomization: dict[str, Any]) -> None:
    folder = write(tmp_path, kustomization, "d.yaml", [pod("app")])
    with pytest.raises(KustomizeError):
        build(folder)
