"""Send many images to vit-service, several requests in flight, one image per request.

    from vit_client import classify
    for r in classify(["examples/"], url="http://127.0.0.1:8000", top_k=2):
        print(r.path, r.result["predictions"][0]["label"] if r.ok else r.error)

One image per request: the server's dynamic batching combines requests in flight into batches,
and one bad image fails only its own request. `concurrency` requests are in flight at a time.
429 and 503 (queue full, warming up, draining) are retried after their Retry-After.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from vit_client.errors import ClientError, ServerUnreachable, Unauthorized
from vit_client.inputs import find_images

DEFAULT_URL = "http://127.0.0.1:8000"
API_KEY_VARIABLE = "VIT_API_KEY"  # the server's own name for the key
RETRY_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_S = 30.0  # never sleep longer than this on one Retry-After


@dataclass(frozen=True)
class ImageError:
    status: int  # the HTTP status; 0 when no answer came (timeout, connection dropped)
    code: str  # the server's error code ("invalid_image", ...)
    message: str

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}" if self.status else self.message


@dataclass(frozen=True)
class Result:
    """One image's answer: `result` is the server's entry for it (predictions, embedding or
    attention), `png` the heat-map overlay when asked for, `error` why there is neither."""

    path: Path
    result: dict[str, Any] | None = None
    png: bytes | None = None
    error: ImageError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Options:
    url: str = DEFAULT_URL
    api_key: str | None = None  # None: $VIT_API_KEY, if set
    concurrency: int = 8
    timeout: float = 60.0  # seconds per request
    retries: int = 5  # per image, on 429 / 503
    progress: bool = False  # a progress bar on stderr (shown only on a terminal)


def classify(sources: Iterable[str | Path], *, top_k: int = 5, **options: Any) -> list[Result]:
    """The top_k classes of every image the sources name (files, folders, globs)."""
    return run("classify", sources, {"top_k": top_k}, Options(**options))


def embed(
    sources: Iterable[str | Path], *, normalize: bool = False, **options: Any
) -> list[Result]:
    """The [CLS] embedding of every image (a list of D floats), L2-normalised if asked."""
    return run("embed", sources, {"normalize": str(normalize).lower()}, Options(**options))


def attention(sources: Iterable[str | Path], *, png: bool = False, **options: Any) -> list[Result]:
    """The attention rollout over the patch grid of every image; png: the overlay image instead."""
    return run("attention", sources, {"format": "png" if png else "json"}, Options(**options))


def run(
    endpoint: str, sources: Iterable[str | Path], params: dict[str, Any], options: Options
) -> list[Result]:
    """Results in the order the sources name the images. Raises ClientError (InputError,
    ServerUnreachable, Unauthorized) when nothing can be sent or the server cannot be used."""
    paths = find_images(sources)
    return asyncio.run(_send_all(endpoint, paths, params, options))


async def _send_all(
    endpoint: str, paths: list[Path], params: dict[str, Any], options: Options
) -> list[Result]:
    key = options.api_key if options.api_key is not None else os.environ.get(API_KEY_VARIABLE)
    client = httpx.AsyncClient(
        base_url=options.url,
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=httpx.Timeout(options.timeout, connect=min(options.timeout, 10.0)),
        limits=httpx.Limits(max_connections=options.concurrency),
    )
    results: list[Result] = [Result(p) for p in paths]
    todo = iter(enumerate(paths))  # shared by the workers: each image is taken once
    bar = tqdm(total=len(paths), unit="img", disable=None if options.progress else True)

    async def worker() -> None:
        for i, path in todo:
            results[i] = await _send(client, endpoint, path, params, options)
            bar.update()

    try:
        async with client, asyncio.TaskGroup() as group:
            for _ in range(min(options.concurrency, len(paths))):
                group.create_task(worker())
    except ExceptionGroup as failed:  # the first fatal error stops every worker
        fatal = [e for e in failed.exceptions if isinstance(e, ClientError)]
        raise (fatal[0] if fatal else failed) from None
    finally:
        bar.close()
    return results


async def _send(
    client: httpx.AsyncClient, endpoint: str, path: Path, params: dict[str, Any], options: Options
) -> Result:
    try:
        data = path.read_bytes()
    except OSError as e:
        return Result(path, error=ImageError(0, "unreadable", f"cannot read {path}: {e.strerror}"))
    for attempt in range(options.retries + 1):
        try:
            files = {"file": (path.name, data)}
            answer = await client.post(f"/{endpoint}", params=params, files=files)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            why = f"{_reason(e)} (is vit-serve running there?)"
            raise ServerUnreachable(f"cannot reach {options.url}: {why}") from None
        except httpx.TimeoutException:
            return Result(path, error=ImageError(0, "timeout", f"no answer in {options.timeout} s"))
        except httpx.TransportError as e:
            return Result(path, error=ImageError(0, "connection", _reason(e)))
        if answer.status_code not in RETRY_STATUSES or attempt == options.retries:
            break
        await asyncio.sleep(_retry_after(answer))
    if answer.status_code == 401:
        why = _error(answer).message
        raise Unauthorized(f"401 from {options.url}: {why} (the key is ${API_KEY_VARIABLE})")
    if answer.is_success and answer.headers.get("content-type", "").startswith("image/png"):
        return Result(path, png=answer.content)
    if answer.is_success:
        return Result(path, result=answer.json()["results"][0])
    return Result(path, error=_error(answer))


def _error(answer: httpx.Response) -> ImageError:
    """The server's {"error": {"code", "message"}}, or what a proxy in between said."""
    try:
        body = answer.json()["error"]
        return ImageError(answer.status_code, str(body["code"]), str(body["message"]))
    except (ValueError, KeyError, TypeError):
        text = answer.text.strip().splitlines()
        return ImageError(answer.status_code, "http_error", text[0][:200] if text else "")


def _retry_after(answer: httpx.Response) -> float:
    try:
        return min(max(float(answer.headers.get("retry-after", 1)), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:  # an HTTP date: rare from this server; wait the usual second
        return 1.0


def _reason(error: Exception) -> str:
    """What went wrong, without the errno ("[Errno 111] Connection refused")."""
    text = str(error).strip()
    return text.split("] ", 1)[-1] if text else type(error).__name__
