"""Schemathesis hooks: image bodies are the fuzz corpus (mutations.py), intact and mutated, not
random bytes, so generated requests reach the decoder and the model instead of stopping at
"not an image". schemathesis.toml here names this module (tests/ must be on PYTHONPATH);
tests/e2e/test_e2e_schema.py runs it against a real `vit-serve`, and the same command runs it
against any deployment.

Covered: a raw image/* body, each multipart file part (the schema's `format: binary`) and each
string of a JSON body's "images" list (base64, sometimes as a data: URI).
"""

from __future__ import annotations

import base64
from typing import Any

import schemathesis
from hypothesis import strategies as st

from fuzz.mutations import hostile_images

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff")

for media in IMAGE_TYPES:
    schemathesis.openapi.media_type(media, hostile_images())
schemathesis.openapi.format("binary", hostile_images())

_BASE64 = st.builds(
    lambda prefix, data: prefix + base64.b64encode(data).decode(),
    st.sampled_from(["", "data:image/png;base64,", "data:;base64,"]),
    hostile_images(),
)


@schemathesis.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """A JSON body's "images" as generated, or (as often) 1 to 3 base64 images, some hostile,
    mixed with the generated strings."""
    if not (isinstance(body, dict) and isinstance(body.get("images"), list)):
        return st.just(body)
    generated = st.sampled_from(body["images"]) if body["images"] else _BASE64
    images = st.lists(_BASE64 | generated, min_size=1, max_size=3)
    return st.just(body) | images.map(lambda found: {**body, "images": found})
