"""The Open Inference Protocol (KServe v2) in-process (the real app, real ORT sessions): the
protocol's JSON shapes, both input forms, the binary and classification extensions, and errors in
the protocol's shape with the native statuses."""

from __future__ import annotations

import base64
import gzip
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hosted import local_app
from test_api import LIMITS, files, wait_ready

from service.settings import Settings
from vit_core.bundle import load_bundle
from vit_core.images import Preprocessor

Draw = Any  # the conftest `draw` fixture's callable
MODEL = "/v2/models/tiny-vit"
INFER = f"{MODEL}/infer"
LENGTH = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def client(tiny_bundle: Path) -> Iterator[TestClient]:
    with local_app(Settings(bundle=tiny_bundle, **LIMITS)) as app, TestClient(app) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def preprocess(tiny_bundle: Path) -> Preprocessor:
    m = load_bundle(tiny_bundle)
    return Preprocessor(m.preprocess, m.image_size, 4_000_000, m.pixels)


def image_input(*images: bytes) -> dict[str, Any]:
    data = [base64.b64encode(i).decode() for i in images]
    return {"name": "image", "datatype": "BYTES", "shape": [len(images)], "data": data}


def pixels_input(x: np.ndarray, **extra: Any) -> dict[str, Any]:
    datatype = "UINT8" if x.dtype == np.uint8 else "FP32"
    return {"name": "pixels", "datatype": datatype, "shape": list(x.shape), **extra}


def binary(request: dict[str, Any], tail: bytes) -> dict[str, Any]:
    """httpx arguments for a JSON header followed by binary tensor data."""
    header = json.dumps(request).encode()
    return dict(content=header + tail, headers={LENGTH: str(len(header))})


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def outputs(answer: Any) -> dict[str, np.ndarray]:
    """Every output of a 200 answer, JSON or binary, as arrays of its declared shape."""
    assert answer.status_code == 200, answer.text
    size = answer.headers.get(LENGTH)
    header = json.loads(answer.content[: int(size)] if size else answer.content)
    tail, found = answer.content[int(size) :] if size else b"", {}
    for out in header["outputs"]:
        if "data" in out:
            values = np.array(out["data"], np.float32 if out["datatype"] == "FP32" else object)
        else:
            n = out["parameters"]["binary_data_size"]
            values, tail = np.frombuffer(tail[:n], "<f4"), tail[n:]
        found[out["name"]] = values.reshape(out["shape"])
    assert tail == b""
    return found


# -- metadata and health ----------------------------------------------------------------------


def test_metadata_and_health_in_the_protocols_shapes(client: TestClient) -> None:
    server = client.get("/v2").json()
    assert set(server) == {"name", "version", "extensions"}
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])
    model = client.get(MODEL).json()
    assert model == client.get(f"{MODEL}/versions/1").json()
    assert (model["name"], model["versions"], model["platform"]) == (
        "tiny-vit", ["1"], "onnxruntime_onnx"
    )  # fmt: skip
    tensors = {t["name"]: (t["datatype"], t["shape"]) for t in model["inputs"] + model["outputs"]}
    assert tensors == {
        "image": ("BYTES", [-1]),
        "pixels": ("UINT8", [-1, 32, 32, 3]),  # the graph's own input: decoded and resized
        "logits": ("FP32", [-1, 4]),
        "probabilities": ("FP32", [-1, 4]),
        "embedding": ("FP32", [-1, 32]),
    }
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        f"{MODEL}/ready",
        f"{MODEL}/versions/1/ready",
    ):
        answer = client.get(path)
        assert (answer.status_code, answer.content) == (200, b""), path


# -- inference --------------------------------------------------------------------------------


def test_images_as_bytes_answer_what_the_native_api_does(client: TestClient, draw: Draw) -> None:
    images = [draw(seed=1), draw(seed=2, fmt="PNG")]
    answer = client.post(INFER, json={"id": "req-7", "inputs": [image_input(*images)]})
    body = answer.json()
    assert set(body) == {"model_name", "model_version", "id", "outputs"}
    assert (body["model_name"], body["model_version"], body["id"]) == ("tiny-vit", "1", "req-7")
    assert [o["name"] for o in body["outputs"]] == ["logits", "probabilities", "embedding"]
    assert all(set(o) == {"name", "datatype", "shape", "data"} for o in body["outputs"])
    got = outputs(answer)
    assert got["probabilities"].shape == (2, 4) and got["embedding"].shape == (2, 32)
    native = client.post("/classify?top_k=4", files=files(*images)).json()["results"]
    for probs, result in zip(got["probabilities"], native, strict=True):
        for p in result["predictions"]:
            assert probs[p["index"]] == pytest.approx(p["score"], abs=1e-6)
    embed = client.post("/embed", files=files(*images)).json()["results"]
    np.testing.assert_allclose(got["embedding"], [e["embedding"] for e in embed], atol=1e-5)
    assert "x-inference-time-ms" in answer.headers  # the same timing headers as the native API


def test_bytes_may_be_shaped_b_by_1_with_nested_data(client: TestClient, draw: Draw) -> None:
    images = [draw(seed=1), draw(seed=2)]
    flat = image_input(*images)
    nested = {**flat, "shape": [2, 1], "data": [[d] for d in flat["data"]]}
    by_flat = outputs(client.post(INFER, json={"inputs": [flat]}))
    by_nested = outputs(client.post(INFER, json={"inputs": [nested]}))
    np.testing.assert_array_equal(by_nested["logits"], by_flat["logits"])


def test_pixels_skip_decoding_and_answer_as_their_image_does(
    client: TestClient, draw: Draw, preprocess: Preprocessor
) -> None:
    images = [draw(seed=3), draw(seed=4)]
    x = np.stack([preprocess(i).pixels for i in images])  # (2, 32, 32, 3) uint8
    by_image = outputs(client.post(INFER, json={"inputs": [image_input(*images)]}))
    nested = {"inputs": [pixels_input(x, data=x.tolist())], "outputs": [{"name": "logits"}]}
    flat = {"inputs": [pixels_input(x, data=x.ravel().tolist())], "outputs": [{"name": "logits"}]}
    raw = {"inputs": [pixels_input(x, parameters={"binary_data_size": x.nbytes})]}
    for answer in (
        client.post(INFER, json=nested),
        client.post(INFER, json=flat),
        client.post(INFER, **binary(raw, x.tobytes())),
    ):
        np.testing.assert_allclose(outputs(answer)["logits"], by_image["logits"], atol=1e-5)


def test_a_bundle_of_schema_1_still_takes_fp32_normalised_pixels(
    legacy_bundle: Path, draw: Draw
) -> None:
    m = load_bundle(legacy_bundle)
    x = np.stack([Preprocessor(m.preprocess, 32, 4_000_000)(draw(seed=7)).pixels])  # (1, 3, S, S)
    with local_app(Settings(bundle=legacy_bundle, **LIMITS)) as app, TestClient(app) as client:
        wait_ready(client)
        pixels = next(t for t in client.get(MODEL).json()["inputs"] if t["name"] == "pixels")
        assert (pixels["datatype"], pixels["shape"]) == ("FP32", [-1, 3, 32, 32])
        by_image = outputs(client.post(INFER, json={"inputs": [image_input(draw(seed=7))]}))
        raw = {"inputs": [pixels_input(x, parameters={"binary_data_size": x.nbytes})]}
        by_pixels = outputs(client.post(INFER, **binary(raw, x.tobytes())))
    np.testing.assert_allclose(by_pixels["logits"], by_image["logits"], atol=1e-5)


def test_binary_data_both_ways_as_tritonclient_sends_it(client: TestClient, draw: Draw) -> None:
    images = [draw(seed=5), draw(seed=6)]
    tail = length_prefixed(*images)
    image = {"name": "image", "datatype": "BYTES", "shape": [2]}
    request = {
        "inputs": [{**image, "parameters": {"binary_data_size": len(tail)}}],
        "parameters": {"binary_data_output": True},
        "outputs": [
            {"name": "embedding"},
            {"name": "logits", "parameters": {"binary_data": False}},
        ],
    }
    answer = client.post(INFER, **binary(request, tail))
    assert answer.headers["content-type"] == "application/octet-stream"
    header = json.loads(answer.content[: int(answer.headers[LENGTH])])
    embedding, logits = header["outputs"]
    assert embedding["parameters"] == {"binary_data_size": 2 * 32 * 4} and "data" not in embedding
    assert "data" in logits and "parameters" not in logits
    by_json = outputs(client.post(INFER, json={"inputs": [image_input(*images)]}))
    got = outputs(answer)
    np.testing.assert_allclose(got["embedding"], by_json["embedding"], atol=1e-5)
    np.testing.assert_allclose(got["logits"], by_json["logits"], atol=1e-5)


def test_classification_answers_the_top_k_as_value_index_label(
    client: TestClient, draw: Draw
) -> None:
    request = {
        "inputs": [image_input(draw(seed=7))],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}],
    }
    (out,) = client.post(INFER, json=request).json()["outputs"]
    assert (out["datatype"], out["shape"]) == ("BYTES", [1, 3])
    native = client.post("/classify?top_k=3", files=files(draw(seed=7))).json()["results"][0]
    expected = [(p["score"], p["index"], p["label"]) for p in native["predictions"]]
    parsed = [(float(v), int(i), label) for v, i, label in (s.split(":") for s in out["data"])]
    assert [(i, label) for _, i, label in parsed] == [(i, label) for _, i, label in expected]
    assert [v for v, _, _ in parsed] == pytest.approx([v for v, _, _ in expected], abs=1e-5)


def test_a_gzip_body_is_inflated(client: TestClient, draw: Draw) -> None:
    body = json.dumps({"inputs": [image_input(draw(seed=8))]}).encode()
    answer = client.post(INFER, content=gzip.compress(body), headers={"Content-Encoding": "gzip"})
    plain = client.post(INFER, content=body)
    np.testing.assert_allclose(outputs(answer)["logits"], outputs(plain)["logits"], atol=1e-6)


def test_the_versioned_route_and_the_metrics_label_by_route(client: TestClient, draw: Draw) -> None:
    answer = client.post(f"{MODEL}/versions/1/infer", json={"inputs": [image_input(draw())]})
    assert answer.status_code == 200
    metrics = client.get("/metrics").text
    assert 'vit_images_total{endpoint="/v2/models/{name}/versions/{version}/infer"} 1.0' in metrics
    assert 'vit_requests_total{endpoint="/v2/models/{name}/infer",status="200"}' in metrics


# -- errors -----------------------------------------------------------------------------------


def bad_requests(draw: Draw) -> list[tuple[str, dict[str, Any], int, str]]:
    """(path, httpx request arguments, status, a phrase of the message)."""
    jpeg, ok = draw(), image_input(draw())
    px = np.zeros((1, 32, 32, 3), np.uint8)
    floats = np.zeros((1, 3, 32, 32), np.float32)  # what a bundle of schema 1 takes
    five = {"name": "image", "datatype": "BYTES", "shape": [5], "data": ["x"] * 5}
    bomb = gzip.compress(b" " * 400_000)
    return [
        ("/v2/models/resnet/infer", dict(json={"inputs": [ok]}), 404, "no model 'resnet'"),
        (f"{MODEL}/versions/2/infer", dict(json={"inputs": [ok]}), 404, "no version '2'"),
        (INFER, dict(content=b""), 400, "empty"),
        (INFER, dict(content=b"{"), 422, "inference request"),
        (INFER, dict(json={"inputs": []}), 422, "at least 1"),
        (INFER, dict(json={"inputs": [ok, ok]}), 422, "one input"),
        (INFER, dict(json={"inputs": [{**ok, "name": "x"}]}), 422, "no input 'x'"),
        (INFER, dict(json={"inputs": [{**ok, "datatype": "FP32"}]}), 422, "takes BYTES"),
        (INFER, dict(json={"inputs": [{**ok, "shape": [1, 2]}]}), 422, "[B] or [B, 1]"),
        (INFER, dict(json={"inputs": [{**ok, "shape": [-1]}]}), 422, "greater than or equal"),
        (INFER, dict(json={"inputs": [five]}), 413, "5 images in one request; the limit is 4"),
        (INFER, dict(json={"inputs": [{**ok, "data": ["not base64!"]}]}), 400, "base64"),
        (INFER, dict(json={"inputs": [{**ok, "data": [1]}]}), 422, "base64 strings"),
        (INFER, dict(json={"inputs": [image_input(b"junk")]}), 400, "not a JPEG"),
        (INFER, dict(json={"inputs": [image_input(b"")]}), 400, "empty"),
        (INFER, dict(json={"inputs": [pixels_input(px[:, :8])]}), 422, "[B, 32, 32, 3]"),
        (INFER, dict(json={"inputs": [pixels_input(floats)]}), 422, "FP32 [1, 3, 32, 32]; it"),
        (INFER, dict(json={"inputs": [pixels_input(px, data=[1, 2])]}), 422, "2 values"),
        (INFER, dict(json={"inputs": [pixels_input(px, data=["a"] * 3072)]}), 422, "numbers"),
        (INFER, dict(json={"inputs": [pixels_input(px, data=[256] * 3072)]}), 422, "0..255"),
        (INFER, dict(json={"inputs": [pixels_input(px, data=[0.5] * 3072)]}), 422, "whole numbers"),
        (INFER, dict(json={"inputs": [pixels_input(np.zeros((5, 32, 32, 3), np.uint8),
                                                   data=[0] * 15360)]}),
         413, "over 12,936 values; send large tensors with the binary data extension"),
        (INFER, binary({"inputs": [pixels_input(px, parameters={"binary_data_size": 7})]},
                       px.tobytes()[:7]), 422, "7 values"),
        (INFER, binary({"inputs": [ok]}, b"\0"), 422, "binary_data_size"),
        (INFER, binary({"inputs": [{**five, "data": None, "parameters": {"binary_data_size": 9}}]},
                       length_prefixed(jpeg)[:9]), 413, "5 images"),
        (INFER, binary({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                    "parameters": {"binary_data_size": 8}}]}, b"\4\0\0\0abcd"),
         422, "ends before element 1"),
        (INFER, dict(content=b"{}", headers={LENGTH: "99"}), 400, LENGTH),
        (INFER, dict(json={"inputs": [ok], "outputs": [{"name": "rollout"}]}), 422,
         "no output 'rollout'"),
        (INFER, dict(json={"inputs": [ok], "outputs": [{"name": "logits"}] * 2}), 422,
         "more than once"),
        (INFER, dict(json={"inputs": [ok], "outputs": [
            {"name": "embedding", "parameters": {"classification": 2}}]}), 422, "class scores"),
        (INFER, dict(json={"inputs": [ok], "parameters": {"binary_data_output": 1}}), 422,
         "binary_data_output must be bool"),
        (INFER, dict(content=b"{}", headers={"Content-Encoding": "br"}), 415, "br is not"),
        (INFER, dict(content=bomb, headers={"Content-Encoding": "gzip"}), 413, "inflates past"),
        (INFER, dict(content=b"\xff" * 300_001), 413, "300,000 bytes"),
        ("/v2/nowhere", dict(json={}), 404, "no route /v2/nowhere"),
        ("/v2/health/live", dict(json={}), 405, "POST is not allowed"),
    ]  # fmt: skip


def test_bad_requests_get_the_protocols_error_shape_with_native_statuses(
    client: TestClient, draw: Draw
) -> None:
    for path, request, status, phrase in bad_requests(draw):
        answer = client.post(path, **request)
        assert answer.status_code == status, (path, answer.text)
        body = answer.json()
        assert list(body) == ["error"] and isinstance(body["error"], str), body
        assert phrase in body["error"], (phrase, body)
    assert client.post(INFER, json={"inputs": [image_input(draw())]}).status_code == 200
    native = client.post("/classify", content=b"hi", headers={"Content-Type": "text/plain"})
    assert native.json()["error"]["code"] == "unsupported_media_type"  # native stays native


def test_an_api_key_guards_v2_but_not_its_health_probes(tiny_bundle: Path, draw: Draw) -> None:
    with (
        local_app(Settings(bundle=tiny_bundle, api_key="k3y", **LIMITS)) as app,
        TestClient(app) as c,
    ):
        wait_ready(c)
        request = {"inputs": [image_input(draw())]}
        for path in ("/v2", MODEL, f"{MODEL}/ready"):
            assert c.get(path).status_code == 401
        refused = c.post(INFER, json=request)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "API key" in refused.json()["error"]
        good = {"Authorization": "Bearer k3y"}
        assert c.post(INFER, json=request, headers=good).status_code == 200
        assert [c.get(f"/v2/health/{p}").status_code for p in ("live", "ready")] == [200, 200]


def test_docs_describe_the_v2_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    infer = paths["/v2/models/{name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert {"400", "401", "404", "413", "422", "429", "503"} <= set(infer["responses"])
    assert {"/v2", "/v2/health/live", "/v2/models/{name}/versions/{version}/ready"} <= set(paths)
