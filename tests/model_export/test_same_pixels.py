"""Training and serving see the same pixels: hostile-but-valid files through both paths.

Each file is one that a careless transform gets wrong (16 bits read as 8, alpha dropped, a
palette's transparent index shown as its colour, EXIF rotation ignored). The training data path
(scan + ImageDataset) and the serving path (Preprocessor on the request's bytes) must agree to the
last bit, in squash and in crop mode, with or without the scaled JPEG decode: these files are under
twice the model's input, where the scaled path decodes in full too.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_export.model.vit import ViTConfig
from model_export.training.data import ImageDataset, scan
from vit_core.bundle import Preprocess
from vit_core.images import Preprocessor

SIZE = 32
PREPROCESS = {
    "squash": Preprocess(
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic",
        resize_mode="squash", crop_pct=1.0,
    ),
    "crop": Preprocess(
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bilinear",
        resize_mode="crop", crop_pct=0.875,
    ),
}  # fmt: skip
SERVING_MAX_PIXELS = 40_000_000  # the service's default limit


def _config(p: Preprocess) -> ViTConfig:
    """The tiny model whose ViTConfig carries the same preprocessing as p."""
    return ViTConfig(
        image_size=SIZE, patch_size=8, dim=32, depth=1, heads=1, mlp_dim=32, num_classes=1,
        mean=p.mean, std=p.std, interpolation=p.interpolation, resize_mode=p.resize_mode,
        crop_pct=p.crop_pct,
    )  # fmt: skip


def _rgb(height: int, width: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8: a diagonal gradient plus noise, so resizing and cropping both show."""
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(height), np.arange(width)) * (255 / (height + width))
    noise = rng.integers(0, 60, (height, width, 3))
    return np.clip(ramp[..., None] + noise, 0, 255).astype(np.uint8)


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _hostile() -> dict[str, tuple[bytes, str]]:
    """file name → (bytes, the mode PIL opens it in). Non-square, so squash ≠ crop."""
    h, w = 45, 70
    rgb = _rgb(h, w, seed=0)
    sixteen = np.linspace(0, 65535, h * w).reshape(h, w).astype(np.uint16)  # all of 0..65535
    alpha = np.zeros((h, w), np.uint8)
    alpha[:, w // 3 :] = 255  # left third transparent, over colours that are not white
    alpha[h // 2 :, w // 3 : 2 * w // 3] = 128  # and a half-transparent patch
    rgba = Image.fromarray(np.dstack([rgb, alpha]))
    palette = Image.fromarray(rgb).quantize(16)
    palette.putpixel((0, 0), 3)
    palette.paste(3, (0, 0, w // 2, h // 2))  # index 3 is transparent: a quarter of the picture
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": upright it is 45 wide and 70 tall
    la = Image.fromarray(np.dstack([rgb[..., 0], alpha])).convert("LA")
    return {
        "grey16.png": (_save(Image.fromarray(sixteen), "PNG"), "I;16"),
        "rgba.png": (_save(rgba, "PNG"), "RGBA"),
        "palette.png": (_save(palette, "PNG", transparency=3), "P"),
        "cmyk.jpg": (_save(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), "CMYK"),
        "exif6.jpg": (_save(Image.fromarray(rgb), "JPEG", exif=exif, quality=95), "RGB"),
        "grey-alpha.png": (_save(la, "PNG"), "LA"),
        "grey.png": (_save(Image.fromarray(rgb[..., 1]), "PNG"), "L"),
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    (root / "any").mkdir()
    for name, (data, mode) in _hostile().items():
        (root / "any" / name).write_bytes(data)
        with Image.open(root / "any" / name) as image:  # the file is as hostile as it claims
            assert image.mode == mode, name
    return root


@pytest.mark.parametrize("scaled", [False, True], ids=["exact", "scaled"])
@pytest.mark.parametrize("mode", ["squash", "crop"])
def test_training_tensors_equal_serving_pixels(folder: Path, mode: str, scaled: bool) -> None:
    preprocess = PREPROCESS[mode]
    found = scan(folder)
    assert found.skipped == () and len(found.samples) == len(_hostile())
    dataset = ImageDataset(found.samples, _config(preprocess))
    serve = Preprocessor(preprocess, SIZE, SERVING_MAX_PIXELS, scaled_decode=scaled)
    differ = []
    for (path, _), (tensor, _) in zip(found.samples, dataset, strict=True):
        served = serve(path.read_bytes()).pixels  # (3, S, S), as a request with this file gets
        assert tensor.shape == served.shape == (3, SIZE, SIZE)
        if not np.array_equal(tensor.numpy(), served):
            differ.append(path.name)
    assert not differ, f"training and serving disagree on {', '.join(differ)}"
