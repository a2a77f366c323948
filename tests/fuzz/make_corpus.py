"""Writes tests/fuzz/corpus/: tiny valid images, one per format and the colour modes decode()
converts, each a few hundred bytes, for the decode fuzz to mutate. Run once; the files are
committed (re-running rewrites them, byte-identical for the same Pillow):

    python tests/fuzz/make_corpus.py
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

CORPUS = Path(__file__).parent / "corpus"
W, H = 12, 8  # not square, so a swapped width/height or a wrong EXIF rotation shows


def rgb() -> Image.Image:
    """A horizontal red ramp, a vertical green ramp, a blue block: every pixel distinct."""
    x = np.linspace(0, 255, W)[None, :]  # (1, W)
    y = np.linspace(0, 255, H)[:, None]  # (H, 1)
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[..., 0] = np.broadcast_to(x, (H, W))
    pixels[..., 1] = np.broadcast_to(y, (H, W))
    pixels[2:6, 3:7, 2] = 200
    return Image.fromarray(pixels)  # (H, W, 3) uint8 → RGB


def rgba() -> Image.Image:
    image = rgb().convert("RGBA")
    alpha = np.full((H, W), 255, np.uint8)
    alpha[:, : W // 2] = 0  # the left half transparent
    image.putalpha(Image.fromarray(alpha))
    return image


def grey16() -> Image.Image:
    ramp = np.linspace(0, 65535, W * H).reshape(H, W).astype(np.uint16)
    return Image.fromarray(ramp)  # uint16 → mode I;16


def exif_rotated() -> dict[str, object]:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to show
    return {"exif": exif.tobytes()}


def palette_with_transparency() -> Image.Image:
    image = rgb().quantize(8)
    image.info["transparency"] = 0
    return image


# file name → (image, Pillow format, save parameters)
FILES: dict[str, tuple[Image.Image, str, dict[str, object]]] = {
    "rgb-exif.jpg": (rgb(), "JPEG", {"quality": 50, **exif_rotated()}),
    "grey-progressive.jpg": (rgb().convert("L"), "JPEG", {"quality": 50, "progressive": True}),
    "cmyk.jpg": (rgb().convert("CMYK"), "JPEG", {"quality": 50}),
    "rgba.png": (rgba(), "PNG", {}),
    "grey16.png": (grey16(), "PNG", {}),
    "palette.png": (palette_with_transparency(), "PNG", {}),
    "palette.gif": (palette_with_transparency(), "GIF", {}),
    "lossy.webp": (rgb(), "WEBP", {"quality": 50}),
    "alpha-lossless.webp": (rgba(), "WEBP", {"lossless": True}),
    "rgb.bmp": (rgb(), "BMP", {}),
    "palette.bmp": (rgb().quantize(16), "BMP", {}),
    "rgb.tif": (rgb(), "TIFF", {}),
    "packbits.tif": (rgb(), "TIFF", {"compression": "packbits"}),
}


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    for name, (image, fmt, params) in FILES.items():
        buffer = io.BytesIO()
        image.save(buffer, fmt, **params)
        (CORPUS / name).write_bytes(buffer.getvalue())
        print(f"{name}: {len(buffer.getvalue())} bytes")


if __name__ == "__main__":
    main()
