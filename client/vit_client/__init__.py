"""A client for vit-service: `vit-client` on the command line, these functions in Python.

from vit_client import classify
results = classify(["examples/star.jpg", "photos/"], url="http://127.0.0.1:8000", top_k=3)
"""

from vit_client.api import ImageError, Options, Result, attention, classify, embed
from vit_client.errors import ClientError, InputError, ServerUnreachable, Unauthorized
from vit_client.inputs import find_images

__all__ = [
    "ClientError",
    "ImageError",
    "InputError",
    "Options",
    "Result",
    "ServerUnreachable",
    "Unauthorized",
    "attention",
    "classify",
    "embed",
    "find_images",
]
