"""The docs work offline (no CDN) and follow the API key: closed with a key unless made public."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hosted import local_app

from service.settings import Settings

DOCS = ("/docs", "/redoc", "/openapi.json")


@contextmanager
def app_client(bundle: Path, **settings: object) -> Iterator[TestClient]:
    with (
        local_app(Settings(bundle=bundle, providers="cpu", **settings)) as app,
        TestClient(app) as c,
    ):
        yield c


def test_docs_pages_load_every_asset_from_the_service_itself(tiny_bundle: Path) -> None:
    with app_client(tiny_bundle) as c:
        for page in ("/docs", "/redoc"):
            html = c.get(page).text
            sources = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert sources and all(s.startswith("/") for s in sources), sources
            for source in sources:
                asset = c.get(source)
                assert asset.status_code == 200 and len(asset.content) > 1000, source
        assert c.get("/openapi.json").json()["info"]["title"] == "vit-service"
        assert c.get("/docs-assets/..%2Fcore.py").status_code == 404  # only the listed files


@pytest.mark.parametrize("public", [False, True])
def test_with_an_api_key_the_docs_are_closed_unless_public(tiny_bundle: Path, public: bool) -> None:
    with app_client(tiny_bundle, api_key="k3y", public_docs=public) as c:
        for path in DOCS:
            assert c.get(path).status_code == (200 if public else 401), path
            assert c.get(path, headers={"Authorization": "Bearer k3y"}).status_code == 200
        for path in ("/healthz", "/metrics"):  # probes and scrapes stay open either way
            assert c.get(path).status_code == 200
