"""Shared fixtures: a tiny exported ViT bundle, and pictures drawn with PIL."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from PIL import Image, ImageDraw

TINY_LABELS = ("ant", "bee", "cat", "dog")
Draw = Callable[..., bytes]

# Property and fuzz tests (tests/fuzz, tests/e2e/test_e2e_schema.py). "ci", the default, is what
# `make test` runs: derandomised (the same examples every run, nothing saved between runs) and
# bounded. HYPOTHESIS_PROFILE=long searches for real: fresh random examples each run, 25 times
# as many, failures saved in .hypothesis/ and replayed first next time. The deadline catches a
# pathological input (a hang, a quadratic parse); it is loose because this machine is shared.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=2000,
    deadline=timedelta(seconds=5),
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("long", max_examples=50_000, deadline=timedelta(seconds=5))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def export_tiny(out: Path, **kwargs: object) -> Path:
    """A random 2-block ViT (32 px, patch 8, D 32, 4 labels) exported by the real exporter; the
    same weights every call (seed 0), so bundles made with different options can be compared."""
    torch = pytest.importorskip("torch")
    from model_export.export.exporter import export_bundle
    from model_export.model.vit import ViT, ViTConfig

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64,
        num_classes=len(TINY_LABELS), labels=TINY_LABELS,
    )  # fmt: skip
    model = ViT(config)  # the head keeps its random (non-zero) init: the answers differ per image
    export_bundle(
        model, out, name="tiny-vit", version="1", source_sha256="0" * 64,
        allow_untrained_head=True, **kwargs,
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny ViT's bundle as vit-export writes it: uint8 pixels in, normalised in the graphs."""
    return export_tiny(tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture(scope="session")
def legacy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model as a bundle written before uint8 graphs: schema 1, no "pixels" in
    model.json, graphs that take float32 (B, 3, S, S) pixels normalised by the host."""
    from vit_core.bundle import LEGACY_PIXELS, MANIFEST

    out = export_tiny(tmp_path_factory.mktemp("bundles") / "legacy", pixels=LEGACY_PIXELS)
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["pixels"]
    manifest["schema_version"] = 1
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out


@pytest.fixture(scope="session")
def int8_demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained demo checkpoint (checkpoints/demo) exported with --precision int8, once."""
    pytest.importorskip("torch")
    from model_export.export.exporter import main

    checkpoint = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"
    if not (checkpoint / "model.safetensors").is_file():
        pytest.skip("checkpoints/demo is not there")
    out = tmp_path_factory.mktemp("bundles") / "demo-int8"
    assert main([str(checkpoint), "--out", str(out), "--precision", "int8"]) == 0
    return out


def picture(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """An RGB picture: a two-colour gradient with a filled ellipse and rectangle."""
    rng = np.random.default_rng(seed)
    c0, c1 = rng.integers(0, 256, (2, 3))
    ramp = np.linspace(0, 1, width)[None, :, None]  # (1, W, 1)
    pixels = (c0 + (c1 - c0) * ramp).repeat(height, axis=0).astype(np.uint8)  # (H, W, 3)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    x, y = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    draw.ellipse((x, y, x + width // 3, y + height // 3), fill=tuple(rng.integers(0, 256, 3)))
    draw.rectangle((width // 2, height // 2, width - 2, height - 2), fill=(255, 255, 0))
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


@pytest.fixture
def draw() -> Draw:
    """draw(width=64, height=48, seed=0, fmt="JPEG") → the encoded bytes of a fresh picture."""

    def make(width: int = 64, height: int = 48, seed: int = 0, fmt: str = "JPEG") -> bytes:
        return encode(picture(width, height, seed), fmt)

    return make
