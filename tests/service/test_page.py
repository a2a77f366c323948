"""The page's files as the app serves them: open even with an API key, every asset the HTML names
is served with its type, nothing is fetched from another origin (works offline)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hosted import local_app
from test_api import LIMITS

from service.routes.page import STATIC
from service.settings import Settings


@pytest.fixture(scope="module")
def client(tiny_bundle: Path) -> Iterator[TestClient]:
    with (
        local_app(Settings(bundle=tiny_bundle, api_key="k3y", **LIMITS)) as app,
        TestClient(app) as c,
    ):
        yield c


def test_the_page_and_its_assets_are_open_while_the_api_needs_the_key(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert sorted(assets) == ["/static/page.css", "/static/page.js"]
    types = {a: client.get(a).headers["content-type"].split(";")[0] for a in assets}
    assert types == {"/static/page.css": "text/css", "/static/page.js": "text/javascript"}
    assert client.get("/model").status_code == 401  # what the page asks the key for
    for link in ("/docs", "/metrics"):
        assert f'href="{link}"' in page.text


def test_nothing_comes_from_another_origin() -> None:
    for file in STATIC.iterdir():
        assert not re.search(r"(https?:)?//[\w.-]+\.\w", file.read_text()), file.name


def test_only_the_pages_files_are_served_and_none_is_in_the_api_docs(client: TestClient) -> None:
    for name in ("index.html", "..%2Fapp.py", "missing.js"):
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    key = {"Authorization": "Bearer k3y"}  # the docs sit behind the key like the API
    paths = client.get("/openapi.json", headers=key).json()["paths"]
    assert not {"/", "/static/{name}"} & set(paths)
