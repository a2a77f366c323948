"""The Open Inference Protocol against a real `vit-serve`, with Triton's own client (tritonclient's
HTTP client: binary tensor data, classification, compression, headers) as the caller."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from live import Server
from tritonclient.utils import InferenceServerException

from vit_core.bundle import load_bundle
from vit_core.images import Preprocessor

KEY = "s3cret"
MODEL = "tiny-vit"
Draw = Any  # the conftest `draw` fixture's callable


@pytest.fixture
def server(serve: Callable[..., Server]) -> Server:
    return serve(api_key=KEY, max_batch_size=4, max_images_per_request=8)


@pytest.fixture
def client(server: Server) -> Any:
    with httpclient.InferenceServerClient(server.url.removeprefix("http://")) as c:
        yield c


def auth() -> dict[str, str]:
    """A fresh dict each call: tritonclient adds its own headers to the one it is given."""
    return {"Authorization": f"Bearer {KEY}"}


def image_tensor(*images: bytes, binary: bool = True) -> Any:
    tensor = httpclient.InferInput("image", [len(images)], "BYTES")
    if binary:
        return tensor.set_data_from_numpy(np.array(images, dtype=object))
    # JSON data: the protocol carries BYTES as strings, so images go as base64 text.
    text = [base64.b64encode(i).decode() for i in images]
    return tensor.set_data_from_numpy(np.array(text, dtype=object), binary_data=False)


def native(server: Server, path: str, images: list[bytes]) -> list[dict[str, Any]]:
    files = [("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(images)]
    answer = httpx.post(f"{server.url}{path}", files=files, headers=auth(), timeout=60)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["results"])


def test_health_and_metadata_through_tritonclient(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()  # probes: no key needed
    assert client.is_model_ready(MODEL, headers=auth())
    assert client.is_model_ready(MODEL, "1", headers=auth())
    assert not client.is_model_ready(MODEL, "2", headers=auth())
    assert not client.is_model_ready("resnet50", headers=auth())
    assert not client.is_model_ready(MODEL)  # 401 without the key
    server = client.get_server_metadata(headers=auth())
    assert "binary_tensor_data" in server["extensions"]
    model = client.get_model_metadata(MODEL, headers=auth())
    assert [i["name"] for i in model["inputs"]] == ["image", "pixels"]
    assert model["versions"] == ["1"]


def test_images_in_binary_and_json_match_the_native_api(
    client: Any, server: Server, draw: Draw
) -> None:
    images = [draw(seed=s) for s in range(3)]
    wanted = [httpclient.InferRequestedOutput(n) for n in ("probabilities", "embedding")]
    for binary in (True, False):
        result = client.infer(
            MODEL, [image_tensor(*images, binary=binary)], outputs=wanted, headers=auth()
        )
        probabilities, embedding = result.as_numpy("probabilities"), result.as_numpy("embedding")
        assert probabilities.shape == (3, 4) and embedding.shape == (3, 32)
        for probs, answer in zip(
            probabilities, native(server, "/classify?top_k=4", images), strict=True
        ):
            for p in answer["predictions"]:
                assert probs[p["index"]] == pytest.approx(p["score"], abs=1e-6)
        embedded = [e["embedding"] for e in native(server, "/embed", images)]
        np.testing.assert_allclose(embedding, embedded, atol=1e-5)


def test_pixels_and_classification(
    client: Any, server: Server, draw: Draw, tiny_bundle: Path
) -> None:
    images = [draw(seed=10), draw(seed=11)]
    m = load_bundle(tiny_bundle)
    prepare = Preprocessor(m.preprocess, m.image_size, 1_000_000, m.pixels)
    x = np.stack([prepare(i).pixels for i in images])  # (2, 32, 32, 3) uint8: resized, as is
    pixels = httpclient.InferInput("pixels", list(x.shape), "UINT8").set_data_from_numpy(x)
    top = httpclient.InferRequestedOutput("probabilities", class_count=2)
    logits = httpclient.InferRequestedOutput("logits")
    by_pixels = client.infer(MODEL, [pixels], outputs=[top, logits], headers=auth())
    by_images = client.infer(MODEL, [image_tensor(*images)], outputs=[logits], headers=auth())
    np.testing.assert_allclose(
        by_pixels.as_numpy("logits"), by_images.as_numpy("logits"), atol=1e-5
    )
    classes = by_pixels.as_numpy("probabilities")  # (2, 2) of b"value:index:label"
    expected = native(server, "/classify?top_k=2", images)
    for row, answer in zip(classes, expected, strict=True):
        got = [c.decode().split(":")[1:] for c in row]
        assert got == [[str(p["index"]), p["label"]] for p in answer["predictions"]]


def test_compression_ids_and_the_versioned_route(client: Any, draw: Draw) -> None:
    result = client.infer(
        MODEL,
        [image_tensor(draw())],
        model_version="1",
        request_id="abc",
        headers=auth(),
        request_compression_algorithm="gzip",
    )
    response = result.get_response()
    assert (response["id"], response["model_version"]) == ("abc", "1")
    assert [o["name"] for o in response["outputs"]] == ["logits", "probabilities", "embedding"]


def test_errors_reach_tritonclient_with_status_and_message(client: Any, draw: Draw) -> None:
    cases = [
        (dict(model_name="resnet50", headers=auth()), [draw()], "404", "no model 'resnet50'"),
        (dict(model_name=MODEL), [draw()], "401", "API key"),
        (dict(model_name=MODEL, headers=auth()), [draw()] * 9, "413", "the limit is 8"),
        (dict(model_name=MODEL, headers=auth()), [b"not an image"], "400", "not a JPEG"),
    ]
    for arguments, images, status, phrase in cases:
        with pytest.raises(InferenceServerException) as raised:
            client.infer(inputs=[image_tensor(*images)], **arguments)
        assert raised.value.status() == status and phrase in raised.value.message()
    after = client.infer(MODEL, [image_tensor(draw())], headers=auth())
    assert after.as_numpy("logits").shape == (1, 4)  # and the service serves on
