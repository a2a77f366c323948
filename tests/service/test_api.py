"""The HTTP API in-process (the real app, real ORT sessions): every input form, output and error."""

from __future__ import annotations

import base64
import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hostile
import numpy as np
import pytest
from engines import SlowToWarm
from fastapi.testclient import TestClient
from hosted import local_app
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from service.inference.engine import default_cpu_lanes
from service.settings import Settings

LIMITS = dict(
    providers="cpu", max_wait_ms=1, max_body_bytes=300_000, max_images_per_request=4,
    max_queue_images=16, max_image_pixels=4_000_000,
)  # fmt: skip
BOMB = hostile.png(50_000, 50_000)  # a PNG header declaring 2.5 gigapixels
Draw = Any  # the conftest `draw` fixture's callable
FORM = "multipart/form-data; boundary=b0"
TEXT_ONLY_FORM = b'--b0\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--b0--\r\n'


def wait_ready(client: TestClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the app never became ready"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def client(tiny_bundle: Path) -> Iterator[TestClient]:
    with local_app(Settings(bundle=tiny_bundle, **LIMITS)) as app, TestClient(app) as c:
        wait_ready(c)
        yield c


def raw(client: TestClient, path: str, data: bytes, ctype: str = "image/jpeg") -> Any:
    return client.post(path, content=data, headers={"Content-Type": ctype})


def files(*blobs: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)]


def scores(body: dict[str, Any]) -> list[list[tuple[int, float]]]:
    return [[(p["index"], p["score"]) for p in r["predictions"]] for r in body["results"]]


# -- answers ----------------------------------------------------------------------------------


def test_several_files_come_back_in_order_and_match_each_sent_alone(
    client: TestClient, draw: Draw
) -> None:
    blobs = [draw(seed=s) for s in range(3)]
    together = client.post("/classify", files=files(*blobs))
    assert together.status_code == 200
    alone = [scores(raw(client, "/classify", b).json())[0] for b in blobs]
    for got, want in zip(scores(together.json()), alone, strict=True):
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-4)


def test_every_input_form_gives_the_same_answer(client: TestClient, draw: Draw) -> None:
    png = draw(seed=4, fmt="PNG")
    b64 = base64.b64encode(png).decode()
    answers = [
        client.post("/classify", files=files(png)),
        raw(client, "/classify", png, "image/png"),
        client.post("/classify", json={"images": [b64]}),
        client.post("/classify", json={"images": [f"data:image/png;base64,{b64}"]}),
    ]
    assert [a.status_code for a in answers] == [200] * 4
    first = scores(answers[0].json())
    for a in answers[1:]:
        np.testing.assert_allclose(np.array(scores(a.json())), np.array(first), rtol=1e-5)


def test_classify_gives_sorted_probabilities_for_top_k(client: TestClient, draw: Draw) -> None:
    body = raw(client, "/classify?top_k=2", draw()).json()
    assert body["model"] == {"name": "tiny-vit", "version": "1"}
    top = body["results"][0]["predictions"]
    assert len(top) == 2 and top[0]["score"] >= top[1]["score"]
    assert top[0]["label"] == ("ant", "bee", "cat", "dog")[top[0]["index"]]
    every = raw(client, "/classify?top_k=50", draw()).json()["results"][0]["predictions"]
    assert len(every) == 4 and sum(p["score"] for p in every) == pytest.approx(1.0)


def test_embed_as_floats_base64_and_normalised(client: TestClient, draw: Draw) -> None:
    image = draw(seed=5)
    floats = raw(client, "/embed", image).json()
    assert floats["dim"] == 32 and floats["encoding"] == "float" and not floats["normalized"]
    vector = np.array(floats["results"][0]["embedding"], np.float32)
    encoded = raw(client, "/embed?encoding=base64", image).json()["results"][0]["embedding"]
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(encoded), "<f4"), vector)
    unit = raw(client, "/embed?normalize=true", image).json()["results"][0]["embedding"]
    assert np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(unit, vector / np.linalg.norm(vector), rtol=1e-4, atol=1e-6)


def test_attention_json_is_a_unit_scaled_grid_with_the_top_prediction(
    client: TestClient, draw: Draw
) -> None:
    image = draw(seed=6)
    body = client.post("/attention", files=files(image, draw(seed=7))).json()
    assert body["grid"] == [4, 4] and len(body["results"]) == 2
    grid = np.array(body["results"][0]["attention"])
    assert grid.shape == (4, 4) and grid.min() == 0 and grid.max() == pytest.approx(1)
    top1 = raw(client, "/classify?top_k=1", image).json()["results"][0]["predictions"][0]
    assert body["results"][0]["prediction"]["index"] == top1["index"]


def test_attention_png_is_the_picture_with_a_heat_map(client: TestClient, draw: Draw) -> None:
    answer = raw(client, "/attention?format=png", draw(width=90, height=60))
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(answer.content)).size == (90, 60)
    assert "x-inference-time-ms" in answer.headers
    two = client.post("/attention?format=png", files=files(draw(), draw(seed=1)))
    assert two.status_code == 422 and "one image" in two.json()["error"]["message"]


def test_model_describes_what_is_served(client: TestClient) -> None:
    info = client.get("/model").json()
    assert info["labels"] == ["ant", "bee", "cat", "dog"]
    assert (info["image_size"], info["patch_size"], info["dim"]) == ([32, 32], 8, 32)
    assert info["grid"] == [4, 4] and info["backbone"] is None
    assert (info["layers"], info["heads"], info["precision"]) == (2, 2, "fp32")
    assert info["providers"] == ["CPUExecutionProvider"] and info["graphs"] == ["fast", "explain"]
    assert info["decode"] == "host"  # VIT_DECODE=auto on a CPU engine
    batching = info["batching"]
    assert batching["lanes"] == default_cpu_lanes()  # a CPU's: a batch in flight per core
    assert batching["max_wait_ms"] == 1  # as set; the batch size was measured and chosen:
    measured = {int(size): rate for size, rate in batching["batch_size_measured"].items()}
    assert batching["max_batch_size"] in measured and list(measured)[:3] == [1, 2, 4]


def test_on_a_cpu_a_batch_waits_for_no_company_unless_told_to(tiny_bundle: Path) -> None:
    """VIT_MAX_WAIT_MS unset: 0 on a CPU, where a fuller batch costs as much per image (5 on a
    GPU); a lone lane still gets the default."""
    for lanes in (None, 1):
        settings = Settings(bundle=tiny_bundle, providers="cpu", engine_lanes=lanes)
        with local_app(settings) as app, TestClient(app) as c:
            wait_ready(c)
            assert c.get("/model").json()["batching"]["max_wait_ms"] == 0


def test_answers_carry_timing_headers(client: TestClient, draw: Draw) -> None:
    headers = raw(client, "/classify", draw()).headers
    queue, infer, total = (
        float(headers[h]) for h in ("x-queue-time-ms", "x-inference-time-ms", "x-total-time-ms")
    )
    assert queue >= 0 and infer > 0 and queue + infer <= total


def test_metrics_are_prometheus_text(client: TestClient, draw: Draw) -> None:
    raw(client, "/classify", draw())
    answer = client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert 'vit_requests_total{endpoint="/classify",status="200"}' in text
    assert 'vit_model_info{name="tiny-vit",precision="fp32",provider="CPUExecutionProvider"' in text
    assert 'vit_images_total{endpoint="/classify"}' in text and "vit_inflight_images 0.0" in text


def test_docs_describe_every_input_form_and_error(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/classify", "/embed", "/attention"):
        operation = spec["paths"][path]["post"]
        forms = operation["requestBody"]["content"]
        assert set(forms) == {"multipart/form-data", "image/*", "application/json"}
        assert {"400", "401", "413", "415", "422", "429", "500", "503", "504"} <= set(
            operation["responses"]
        )
        assert "invalid_image" in operation["responses"]["400"]["description"]
    assert client.get("/docs").status_code == 200


# -- errors -----------------------------------------------------------------------------------


def bad_requests(draw: Draw) -> list[tuple[str, dict[str, Any], int, str, str]]:
    """(path, httpx request arguments, status, code, a phrase of the message)."""
    jpeg = draw()
    return [
        ("/classify", dict(content=b"hi", headers={"Content-Type": "text/plain"}), 415,
         "unsupported_media_type", "text/plain is not supported"),
        ("/classify", dict(content=jpeg), 415, "unsupported_media_type", "(none)"),
        ("/classify", dict(content=b"", headers={"Content-Type": "image/jpeg"}), 400,
         "empty_body", "empty"),
        ("/classify", dict(content=b"\x00" * 999, headers={"Content-Type": "image/png"}), 400,
         "invalid_image", "not a JPEG, PNG"),
        ("/classify", dict(content=jpeg[: len(jpeg) // 2], headers={"Content-Type": "image/jpeg"}),
         400, "invalid_image", "truncated or corrupt"),
        ("/classify", dict(content=BOMB, headers={"Content-Type": "image/png"}), 413,
         "image_too_large", "pixels"),
        ("/classify", dict(json={"images": ["not base64!"]}), 400, "invalid_image", "base64"),
        ("/classify", dict(json={"images": ["data:image/png,abc"]}), 400, "invalid_image",
         "not a base64 one"),
        ("/classify", dict(json={"imgs": []}), 422, "invalid_parameter", "JSON body"),
        ("/classify", dict(json={"images": []}), 422, "invalid_parameter", "at least 1"),
        ("/classify", dict(content=b"{", headers={"Content-Type": "application/json"}), 422,
         "invalid_parameter", "JSON body"),
        ("/classify", dict(content=TEXT_ONLY_FORM, headers={"Content-Type": FORM}), 400,
         "empty_body", "no file parts"),
        ("/classify", dict(files={"file": ("a.jpg", b"", "image/jpeg")}), 400, "empty_body",
         "0 bytes"),
        ("/classify", dict(content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"}),
         422, "invalid_parameter", "multipart"),
        ("/classify", dict(files=files(*[jpeg] * 5)), 413, "payload_too_large",
         "5 images in one request; the limit is 4"),
        ("/classify", dict(content=b"\xff" * 300_001, headers={"Content-Type": "image/jpeg"}),
         413, "payload_too_large", "300,000 bytes"),
        ("/classify", dict(files=files(jpeg, b"junk")), 400, "invalid_image", "image 1: not a"),
        ("/classify?top_k=0", dict(files=files(jpeg)), 422, "invalid_parameter", "top_k"),
        ("/classify?top_k=many", dict(files=files(jpeg)), 422, "invalid_parameter", "top_k"),
        ("/classify?topk=2", dict(files=files(jpeg)), 422, "invalid_parameter",
         "unknown query parameter 'topk'; /classify takes top_k"),
        ("/embed?normalise=1", dict(files=files(jpeg)), 422, "invalid_parameter",
         "/embed takes encoding, normalize"),
        ("/embed?encoding=hex", dict(files=files(jpeg)), 422, "invalid_parameter", "encoding"),
        ("/attention?format=gif", dict(files=files(jpeg)), 422, "invalid_parameter", "format"),
        ("/nowhere", dict(files=files(jpeg)), 404, "not_found", "/nowhere"),
        ("/healthz", dict(files=files(jpeg)), 405, "method_not_allowed", "POST"),
    ]  # fmt: skip


def test_bad_requests_get_precise_errors_and_the_service_keeps_serving(
    client: TestClient, draw: Draw
) -> None:
    for path, request, status, code, phrase in bad_requests(draw):
        answer = client.post(path, **request)
        assert answer.status_code == status, (path, request.keys(), answer.text)
        error = answer.json()["error"]
        assert error["code"] == code and phrase in error["message"], error
    assert raw(client, "/classify", draw()).status_code == 200
    text = client.get("/metrics").text
    assert 'vit_rejections_total{reason="too_many_images"} 1.0' in text
    assert 'vit_rejections_total{reason="invalid_image"}' in text


def rejections(client: TestClient, reason: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "vit_rejections_total" and sample.labels["reason"] == reason:
                return sample.value
    return 0.0


def test_unknown_paths_and_wrong_methods_are_refusals_counted_like_any_other(
    client: TestClient,
) -> None:
    before = rejections(client, "not_found"), rejections(client, "method_not_allowed")
    missing, wrong = client.get("/nowhere"), client.delete("/classify")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["message"] == "DELETE is not allowed on /classify; use POST"
    after = rejections(client, "not_found"), rejections(client, "method_not_allowed")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def test_an_api_key_guards_inference_and_leaves_operations_open(
    tiny_bundle: Path, draw: Draw
) -> None:
    settings = Settings(bundle=tiny_bundle, api_key="k3y", **LIMITS)
    with local_app(settings) as app, TestClient(app) as c:
        wait_ready(c)
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic k3y"}):
            answer = c.post("/classify", files=files(draw()), headers=headers)
            assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
            assert answer.json()["error"]["code"] == "unauthorized"
        assert c.get("/model").status_code == 401
        good = {"Authorization": "Bearer k3y"}
        assert c.post("/classify", files=files(draw()), headers=good).status_code == 200
        assert c.get("/model", headers=good).status_code == 200
        assert [c.get(p).status_code for p in ("/healthz", "/readyz", "/metrics")] == [200] * 3
        # The key before anything else: without it, a bad or unknown parameter says nothing.
        for path in ("/classify?top_k=2&x=1", "/classify?top_k=0", "/embed?encoding=hex&y=2",
                     "/attention?zzz=1", "/v2/models/tiny-vit/infer?q=1"):  # fmt: skip
            answer = c.post(path, files=files(draw()))
            assert answer.status_code == 401, (path, answer.text)
            assert "top_k" not in answer.text and "encoding" not in answer.text
        assert c.get("/model?x=1").status_code == 401
        assert c.get("/model?x=1", headers=good).status_code == 422  # with it, the usual 422


def test_not_ready_until_warm(tiny_bundle: Path, draw: Draw) -> None:
    engine = SlowToWarm(tiny_bundle)
    settings = Settings(bundle=tiny_bundle, **LIMITS)
    with local_app(settings, engine) as app, TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "warming up" in ready.json()["error"]["message"]
        refused = raw(c, "/classify", draw())
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert json.loads(refused.text)["error"]["code"] == "not_ready"
        engine.release.set()
        wait_ready(c)
        assert raw(c, "/classify", draw()).status_code == 200


def test_a_bundle_without_an_explain_graph_answers_501_for_attention(
    tiny_bundle: Path, tmp_path: Path, draw: Draw
) -> None:
    bundle = shutil.copytree(tiny_bundle, tmp_path / "fast-only")
    manifest = json.loads((bundle / "model.json").read_text())
    for section in ("graphs", "validation"):
        del manifest[section]["explain"]
    (bundle / "model.json").write_text(json.dumps(manifest))
    (bundle / "explain.onnx").unlink()
    with local_app(Settings(bundle=bundle, **LIMITS)) as app, TestClient(app) as c:
        wait_ready(c)
        answer = raw(c, "/attention", draw())
        assert answer.status_code == 501
        assert answer.json()["error"]["code"] == "attention_unavailable"
        assert raw(c, "/classify", draw()).status_code == 200
        assert c.get("/model").json()["graphs"] == ["fast"]
