"""The API's own documentation, served with no CDN: the OpenAPI schema, Swagger UI at /docs and
ReDoc at /redoc, their scripts and styles from the fastapi-offline package (Swagger UI and ReDoc
builds shipped as package data), so the docs work on a host without internet access.

With an API key these sit behind it too, unless `public_docs` is set (app.py decides)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from vit_core.errors import NotFound

ASSETS = Path(fastapi_offline.__file__).parent / "static"
_FILES = {  # the only files served, with their types: no path from the URL reaches the disk
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
TITLE = "vit-service"

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} - Swagger UI",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon.png",
    )


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} - ReDoc",
        redoc_js_url="/docs-assets/redoc.standalone.js",
        redoc_favicon_url="/docs-assets/favicon.png",
        with_google_fonts=False,
    )


@router.get("/docs-assets/{name}")
async def asset(name: str) -> FileResponse:
    if name not in _FILES:
        raise NotFound(f"no documentation asset {name}")
    return FileResponse(ASSETS / name, media_type=_FILES[name])
