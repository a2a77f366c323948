"""The service's configuration: one class, read once at start from VIT_* variables and CLI flags.

Every field is an environment variable (VIT_ + its name in upper case) and a `vit-serve` flag
(--max-batch-size ...); flags win over the environment. Nothing else reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vit_core.errors import validation_problems

ENV_PREFIX = "VIT_"
# The repository's demo bundle; in the container image the package sits in /app, so this is
# /app/models/demo there.
DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "demo"
MiB = 1 << 20
MAX_LANES = 64  # batches in flight: the unset default's cores are counted up to this many

Providers = Literal["auto", "cuda", "cpu"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
ConvSearch = Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"]  # cuDNN's, as ORT names them
Decode = Literal["auto", "host", "device"]
HttpParser = Literal["httptools", "h11"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        cli_prog_name="vit-serve",
        cli_kebab_case=True,
        cli_hide_none_type=True,
    )

    bundle: Path = Field(DEFAULT_BUNDLE, description="bundle folder (model.json + ONNX graphs)")
    host: str = Field("127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(8000, ge=1, le=65535, description="TCP port")
    # Batches pay on a GPU, where 128 images cost little more than one; on a small CPU they
    # barely do (ViT-Ti/16 on 2 cores: 36 images/s at batch 1, 58 at 8, 52 at 32). Unset, the
    # engine measures its graph at warm-up and picks (service/inference/engine.py).
    max_batch_size: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="most images per ONNX Runtime call (unset: measured at warm-up and chosen)",
    )
    # On a CPU, one lane per usable core: batches beside others run on one core each, a batch
    # alone on every core (service/inference/engine.py: why; docs/benchmarks.md, "one core per
    # batch"). On a GPU one, until bench/gpu.sh measures more.
    engine_lanes: int | None = Field(
        None,
        ge=1,
        le=MAX_LANES,
        description="batches the engine runs at once (unset: one per usable core on a CPU, "
        "1 on a GPU)",
    )
    # Paid only while more images are on their way (requests still decoding): a lone request on
    # an idle engine runs at once. On a CPU a batch gains nothing from company (a core runs 33
    # images/s of ViT-Ti/16 at batch 1 or 4) while its images wait for it, so no wait there.
    max_wait_ms: float | None = Field(
        None,
        ge=0,
        le=10_000,
        description="longest wait for images on their way to join a batch (unset: 5 on a GPU, "
        "0 on a CPU)",
    )
    max_queue_images: int = Field(
        256, ge=1, description="images accepted but not yet in a batch before 429s"
    )
    request_timeout_s: float = Field(
        30, gt=0, le=3600, description="per-request deadline (504; 408 if the body is not in)"
    )
    max_images_per_request: int = Field(64, ge=1, description="images one request may carry")
    max_body_bytes: int = Field(32 * MiB, ge=1, description="largest request body (413)")
    # A decompression-bomb guard: checked from the header, before any pixel is decoded.
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="largest width × height one image may declare"
    )
    max_image_bytes: int = Field(
        512 * MiB, ge=MiB, description="estimated peak memory decoding one image may take (413)"
    )
    # Memory ceilings (vit_core/memory.py); None: derived from the container's memory limit.
    decode_memory_bytes: int | None = Field(
        None,
        ge=MiB,
        description="memory the engine's decodes at once may take (default: limit/4, ≤ 4 GiB)",
    )
    body_memory_bytes: int | None = Field(
        None,
        ge=MiB,
        description="request bytes each front holds at once before 429 "
        "(default: limit/workers/8, ≤ 1 GiB)",
    )
    # Unset: one per usable core, at least 4 (service/engine_process.py, decode_threads).
    preprocess_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="decode + resize threads (unset: one per usable core, at least 4)",
    )
    # One event loop and GIL read, check and price a few thousand requests/s; a GPU takes more.
    workers: int = Field(
        1, ge=1, le=64, description="HTTP fronts sharing the port, in front of the one engine"
    )
    # False (the default): a JPEG at least twice the input is decoded at 1/2, 1/4 or 1/8 inside
    # libjpeg-turbo, 2-5× cheaper. Each bundled model's accuracy on its own test images sent at
    # users' sizes moves by at most 0.25 points that way (bench/fast_path_accuracy.py;
    # docs/benchmarks.md), inside the 0.3 allowed for a default. True: decoded in full, as in
    # training, bit for bit.
    exact_decode: bool = Field(
        False,
        description="decode JPEGs in full (false: at the smallest DCT scale that covers the input)",
    )
    providers: Providers = Field("auto", description="ONNX Runtime providers: auto, cuda or cpu")
    # Where a JPEG becomes the model's pixels (service/inference/device_decode.py): on the GPU a
    # batched hardware decode and a resize graph beside the model, where the host's cores would
    # otherwise be the bottleneck; "device" on a CPU host runs the same pipeline on the CPU.
    decode: Decode = Field(
        "auto",
        description="where images are decoded: auto (the GPU when the engine runs on CUDA and "
        "nvImageCodec is installed, else the host), host, or device",
    )
    # -- the CUDA provider (service/inference/engine_io.py); no effect on the CPU
    cuda_conv_algo_search: ConvSearch = Field(
        "EXHAUSTIVE", description="cuDNN convolution algorithm search, run during warm-up"
    )
    cuda_tf32: bool = Field(
        False, description="TF32 matmuls for fp32 bundles: faster, but off the export's 1e-4 check"
    )
    cuda_graphs: bool = Field(
        False, description="capture and replay a CUDA graph per warmed batch size"
    )
    api_key: SecretStr | None = Field(
        None, description="require 'Authorization: Bearer <key>' (prefer VIT_API_KEY to the flag)"
    )
    log_level: LogLevel = Field("info", description="logging level")
    drain_timeout_s: float = Field(
        30, ge=0, le=3600, description="on SIGTERM, how long queued work may take to finish"
    )
    # A load balancer needs a moment to see /readyz fail before the listener goes away.
    drain_delay_s: float = Field(
        3,
        ge=0,
        le=600,
        description="on SIGTERM, how long /readyz says 503 before the listener closes",
    )
    public_docs: bool = Field(
        False, description="with an API key: serve /docs, /redoc and /openapi.json without it"
    )
    # -- connections (service/edge/connections.py): nothing a client holds open is free
    max_connections: int = Field(
        1000, ge=1, description="open connections; one more is answered 429 and closed"
    )
    max_concurrent_requests: int = Field(
        256,
        ge=1,
        description="requests handled at once, each from when its body is in (probes and "
        "/metrics exempt); then 429",
    )
    header_timeout_s: float = Field(
        10, gt=0, le=600, description="a request line + headers must arrive within this"
    )
    # A body must keep moving (Apache's mod_reqtimeout rule): no read may wait longer than
    # body_timeout_s, and the whole body is due body_timeout_s + its size / min_body_rate after
    # it starts. A body still arriving holds its connection and its bytes, never a request slot.
    body_timeout_s: float = Field(
        10, gt=0, le=600, description="a request body may pause this long; then 408 and close"
    )
    min_body_rate: int = Field(
        1024, ge=1, description="bytes/s a request body must average after body_timeout_s (408)"
    )
    keep_alive_s: float = Field(5, gt=0, le=600, description="idle keep-alive connections close")
    # httptools parses in C, several times cheaper per request than h11's pure Python
    # (docs/benchmarks.md); both carry the same guards (service/edge/connections.py).
    http: HttpParser = Field("httptools", description="the HTTP/1.1 parser: httptools or h11")

    @property
    def url(self) -> str:
        """Where the service answers, as a client would write it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @field_validator("bundle")
    @classmethod
    def _is_bundle(cls, bundle: Path) -> Path:
        if not (bundle / "model.json").is_file():
            raise ValueError(f"{bundle} holds no model.json (not a bundle folder)")
        return bundle

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.decode_memory_bytes is not None and self.decode_memory_bytes < self.max_image_bytes:
            raise ValueError(
                f"decode_memory_bytes ({self.decode_memory_bytes}) is below max_image_bytes "
                f"({self.max_image_bytes}): the largest allowed image could never be decoded"
            )
        if self.body_memory_bytes is not None and self.body_memory_bytes < self.max_body_bytes:
            raise ValueError(
                f"body_memory_bytes ({self.body_memory_bytes}) is below max_body_bytes "
                f"({self.max_body_bytes}): the largest allowed request could never be read"
            )
        if self.max_images_per_request > self.max_queue_images:
            raise ValueError(
                f"max_images_per_request ({self.max_images_per_request}) exceeds max_queue_images "
                f"({self.max_queue_images}): such a request could never be queued"
            )
        return self

    @classmethod
    def from_cli(cls, argv: Sequence[str]) -> Settings:
        """Flags over VIT_* variables over defaults; argparse exits 2 on an unknown flag."""
        return cls(_cli_parse_args=list(argv))  # type: ignore[call-arg]


def describe(error: ValidationError) -> str:
    """One line per invalid setting, naming its flag and variable."""
    lines = []
    for where, msg in validation_problems(error.errors()):
        if where:
            lines.append(invalid_setting(where.split(".")[0], msg))
        else:
            lines.append(f"invalid settings: {msg}")
    return "\n".join(lines)


def invalid_setting(name: str, problem: object) -> str:
    """The one way a setting the service cannot run with is named: its flag and variable."""
    flag, var = "--" + name.replace("_", "-"), ENV_PREFIX + name.upper()
    return f"invalid setting {name} ({flag} / {var}): {problem}"


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """VIT_* variables that are no setting, each with the nearest setting's name if one is close."""
    environ = dict(os.environ) if environ is None else environ
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    found = []
    for var in sorted(v for v in environ if v.upper().startswith(ENV_PREFIX)):
        if var.upper() in known:
            continue
        near = get_close_matches(var.upper(), sorted(known), n=1)
        found.append(f"{var} (did you mean {near[0]}?)" if near else var)
    return found


def memory_budgets(settings: Settings, limit: int) -> tuple[int, int]:
    """(decode, body) memory budgets: the engine's decodes, and each front's request bodies; as
    set, or shares of the container's memory `limit` (one engine, settings.workers fronts)."""
    decode = settings.decode_memory_bytes or max(settings.max_image_bytes, min(limit // 4, 4 << 30))
    share = limit // settings.workers
    body = settings.body_memory_bytes or max(settings.max_body_bytes, min(share // 8, 1 << 30))
    return decode, body
