"""`kustomize build` for the few features deploy/k8s uses, in Python: what renders the CPU overlay
(deploy/k8s/cpu) into the plain YAML that `podman kube play` reads, on machines without kubectl.

Supported: `resources` (files, and folders holding a kustomization.yaml: a base), `images`
(name -> newName / newTag / digest) and `patches` (RFC 6902 JSON patches, inline or from a file,
with a target by kind, name, group, version). Applied in kustomize's order: each base is built
first, then this level's patches, then its images. Any other field of a kustomization is an
error, not silently ignored: this is checked against `kubectl kustomize` where kubectl is
installed (tests/deploy/test_k8s.py).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]
KNOWN = {"apiVersion", "kind", "resources", "images", "patches"}
TARGET_FIELDS = {"kind", "name", "group", "version"}
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


class KustomizeError(ValueError):
    pass


def build(folder: Path) -> list[Doc]:
    """The documents `kustomize build folder` prints, in the order of its resources."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN
    if unknown:
        raise KustomizeError(f"{folder}: unsupported kustomization fields {sorted(unknown)}")
    docs: list[Doc] = []
    for resource in kustomization.get("resources", []):
        path = (folder / resource).resolve()
        if path.is_dir():
            docs += build(path)
        else:
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        operations = _operations(folder, patch)
        targets = [doc for doc in docs if _selected(doc, patch.get("target", {}))]
        if not targets:
            raise KustomizeError(f"{folder}: no resource matches the patch target {patch}")
        for index, doc in enumerate(docs):
            if doc in targets:
                docs[index] = json_patch(doc, operations)
    for image in kustomization.get("images", []):
        for doc in docs:
            _set_image(doc, image)
    return docs


def _operations(folder: Path, patch: Doc) -> list[Doc]:
    if set(patch) - {"path", "patch", "target"}:
        raise KustomizeError(f"{folder}: unsupported patch fields {sorted(patch)}")
    text = patch["patch"] if "patch" in patch else (folder / patch["path"]).read_text()
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise KustomizeError(f"{folder}: only JSON 6902 patches (a list of operations)")
    return operations


def _selected(doc: Doc, target: Doc) -> bool:
    if set(target) - TARGET_FIELDS:
        raise KustomizeError(f"unsupported patch target fields {sorted(target)}")
    group, _, version = doc["apiVersion"].rpartition("/")
    found = {"kind": doc["kind"], "name": doc["metadata"]["name"], "group": group}
    found["version"] = version
    return all(found[key] == value for key, value in target.items())


def _set_image(node: Any, image: Doc) -> None:
    """kustomize's images transformer: every container image named `name` (any tag or digest)."""
    if isinstance(node, list):
        for item in node:
            _set_image(item, image)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in CONTAINER_LISTS:
                for container in value:
                    container["image"] = _new_image(container["image"], image)
            _set_image(value, image)


def _new_image(current: str, image: Doc) -> str:
    name, at, digest = current.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    name, tag = (name[:colon], name[colon + 1 :]) if colon > slash else (name, "")
    if name != image["name"]:
        return current
    name = image.get("newName", name)
    if "digest" in image:
        return f"{name}@{image['digest']}"
    if "newTag" in image:
        return f"{name}:{image['newTag']}"
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if at else "")


def json_patch(doc: Doc, operations: list[Doc]) -> Doc:
    """RFC 6902: add, remove, replace, test (what the overlays use); a failed test or a missing
    path is an error, as in kustomize."""
    doc = copy.deepcopy(doc)
    for operation in operations:
        op, path = operation["op"], operation["path"]
        parent, key = _locate(doc, path)
        if op == "test":
            found, value = _get(parent, key, path), operation["value"]
            if found != value:
                raise KustomizeError(f"test failed: {path} is {found!r}, not {value!r}")
        elif op == "remove":
            _get(parent, key, path)
            del parent[key]
        elif op == "replace":
            _get(parent, key, path)
            parent[key] = copy.deepcopy(operation["value"])
        elif op == "add":
            value = copy.deepcopy(operation["value"])
            if isinstance(parent, list):
                parent.insert(len(parent) if key == "-" else int(key), value)
            else:
                parent[key] = value
        else:
            raise KustomizeError(f"unsupported JSON patch operation {op!r}")
    return doc


def _locate(doc: Doc, path: str) -> tuple[Any, Any]:
    """The container of the path's last token, and that token (an int for a list index)."""
    if not path.startswith("/"):
        raise KustomizeError(f"not a JSON pointer: {path!r}")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]
    node: Any = doc
    for token in tokens[:-1]:
        node = _get(node, _key(node, token), path)
    return node, _key(node, tokens[-1])


def _key(node: Any, token: str) -> Any:
    return int(token) if isinstance(node, list) and token != "-" else token


def _get(node: Any, key: Any, path: str) -> Any:
    try:
        return node[key]
    except (KeyError, IndexError, TypeError):
        raise KustomizeError(f"no such path: {path}") from None
