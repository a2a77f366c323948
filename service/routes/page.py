"""GET /: a page for people. Drop or pick an image and it shows the top-k classes, the attention
heat-map over the image and the timings, from the same API (the native routes) a program would call.

The page and its two assets are open: a browser cannot send a bearer token when it navigates.
What the page fetches from the API is what needs the key, which the page asks for when the API
answers 401 and keeps in sessionStorage. Everything is served from here: no CDN, works offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from vit_core.errors import NotFound

STATIC = Path(__file__).resolve().parent.parent / "static"
ASSETS = {"page.js": "text/javascript", "page.css": "text/css"}  # the only files served
# The page runs only its own script and style; heat-maps arrive as blob: URLs, the (empty) icon as
# a data: URL so that the browser does not ask for /favicon.ico.
POLICY = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(
        STATIC / "index.html", media_type="text/html", headers={"Content-Security-Policy": POLICY}
    )


@router.get("/static/{name}")
async def asset(name: Annotated[str, PathParam()]) -> FileResponse:
    if name not in ASSETS:
        raise NotFound(f"no static file {name!r}")
    return FileResponse(STATIC / name, media_type=ASSETS[name])
