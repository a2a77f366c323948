"""Decoding and preprocessing: every format and mode, the bundle's recipe, hostile bytes."""

from __future__ import annotations

import io
from pathlib import Path

import hostile
import numpy as np
import pytest
from PIL import Image

from vit_core.bundle import PixelFormat, Preprocess
from vit_core.errors import EmptyBody, ImageTooLarge, InvalidImage
from vit_core.images import Preprocessor, decode, load_rgb, resize_plan, transform

RED = (220, 20, 30)
SQUASH = Preprocess(
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", resize_mode="squash",
    crop_pct=1.0,
)  # fmt: skip
CROP = Preprocess(
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bilinear",
    resize_mode="crop", crop_pct=0.875,
)  # fmt: skip


def save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


NOISE_JPEG = save(
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG"
)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_supported_format_decodes_to_rgb(fmt: str) -> None:
    image = decode(save(Image.new("RGB", (30, 20), RED), fmt), 10_000)
    assert image.mode == "RGB" and image.size == (30, 20)
    assert np.abs(np.asarray(image).astype(int) - RED).max() <= 12  # lossy formats, palettes


def test_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, (0, 0, 255))]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode(data, 10_000).getpixel((4, 4))[0] > 200  # red, not blue


@pytest.mark.parametrize(
    ("image", "fmt", "expected"),
    [
        (Image.new("L", (4, 4), 100), "PNG", (100, 100, 100)),
        (Image.new("1", (4, 4), 1), "BMP", (255, 255, 255)),
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "TIFF", (255, 0, 0)),
        (Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG", (255, 255, 255)),  # transparent: white
        (Image.new("RGBA", (4, 4), (0, 0, 255, 255)), "WEBP", (0, 0, 255)),
        (Image.new("LA", (4, 4), (0, 0)), "PNG", (255, 255, 255)),
        (Image.fromarray(np.full((4, 4), 40000, np.uint16)), "PNG", (156, 156, 156)),  # 16-bit
    ],
    ids=["grey", "1-bit", "cmyk", "rgba-clear", "rgba-opaque", "grey-alpha", "16-bit"],
)
def test_modes_convert_to_rgb(image: Image.Image, fmt: str, expected: tuple[int, ...]) -> None:
    pixel = decode(save(image, fmt), 10_000).getpixel((1, 1))
    assert np.abs(np.subtract(pixel, expected)).max() <= 2


def test_palette_transparency_is_shown_over_white() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    rgb = decode(save(image, "PNG", transparency=0), 10_000)
    assert rgb.getpixel((0, 0)) == (255, 0, 0) and rgb.getpixel((2, 2)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    assert decode(save(image, "JPEG", exif=exif), 10_000).size == (20, 40)


def test_an_upright_rgb_image_is_decoded_without_a_copy() -> None:
    """Rotation and the mode change each copied the whole frame even when there was nothing to
    do: a 12 MP PNG's decode peaked at 137 MiB, 49 without the copies."""
    opened = Image.open(io.BytesIO(save(Image.new("RGB", (40, 20), RED), "PNG")))
    assert load_rgb(opened) is opened


def test_crop_box_is_the_centre_the_model_saw() -> None:
    image = Image.new("RGB", (200, 100))
    prepared = Preprocessor(CROP, 32, 100_000)(save(image, "PNG"), keep_image=True)
    left, top, right, bottom = prepared.box
    assert prepared.image is not None and prepared.image.size == (200, 100)
    assert right - left == pytest.approx(87.5, abs=1.5) and bottom - top == pytest.approx(
        87.5, abs=1.5
    )
    assert (left + right) / 2 == pytest.approx(100, abs=1) and (top + bottom) / 2 == pytest.approx(
        50, abs=1
    )


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize(
    ("wh", "size"),
    [
        ((333, 500), 224),
        ((500, 333), 224),
        ((640, 480), 224),
        ((97, 61), 32),
        ((200, 90), (32, 48)),
    ],
    ids=["portrait", "landscape", "4:3", "small", "h-by-w"],
)
def test_a_crop_is_the_centre_of_the_whole_picture_resized(
    interpolation: str, wh: tuple[int, int], size: int | tuple[int, int]
) -> None:
    """Only the crop's part is resampled (images.py, _resize), and still it is timm's (and
    torchvision's) eval transform, resize everything then cut out the centre, to within 1
    level, the float rounding of the filter's coefficients: a window off by one pixel, or the
    passes in the other order (up to 13 levels on this picture), would fail."""
    w, h = wh
    ramp = np.add.outer(np.arange(h), np.arange(w)) * (255 / (h + w))
    noise = np.random.default_rng(w * h).integers(0, 80, (h, w, 3))
    image = Image.fromarray(np.clip(ramp[..., None] + noise, 0, 255).astype(np.uint8))
    p = CROP.model_copy(update={"interpolation": interpolation})
    sh, sw = (size, size) if isinstance(size, int) else size
    plan = resize_plan(w, h, p, (sh, sw))
    filter_ = getattr(Image.Resampling, interpolation.upper())
    whole = image.resize((plan.width, plan.height), filter_)
    expected = np.asarray(whole.crop((plan.left, plan.top, plan.left + sw, plan.top + sh)))
    pixels, _ = transform(image, p, size, PixelFormat(dtype="uint8", layout="NHWC"))
    assert pixels.shape == expected.shape
    assert np.abs(pixels.astype(int) - expected).max() <= 1


def test_squash_box_is_the_whole_picture_and_images_are_not_kept_by_default() -> None:
    prepared = Preprocessor(SQUASH, 32, 100_000)(save(Image.new("RGB", (50, 40)), "PNG"))
    assert prepared.box == (0, 0, 50, 40) and prepared.image is None


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (NOISE_JPEG[: len(NOISE_JPEG) // 2], InvalidImage, "JPEG image is truncated or corrupt"),
        (NOISE_JPEG[:100], InvalidImage, "image header is truncated or corrupt"),
        (np.random.default_rng(0).bytes(5000), InvalidImage, "not a JPEG, PNG, WebP, GIF, BMP"),
        (save(Image.new("RGB", (8, 8)), "PPM"), InvalidImage, "not a JPEG"),  # a format we refuse
        (hostile.png(100_000, 100_000), ImageTooLarge, "too many pixels"),  # PIL's own guard
        (hostile.png(8000, 6000), ImageTooLarge, "8000×6000 = 48,000,000 pixels"),
        (b"", EmptyBody, "empty"),
    ],
    ids=[
        "truncated-jpeg",
        "truncated-header",
        "random-bytes",
        "ppm",
        "bomb",
        "over-limit",
        "empty",
    ],
)
def test_hostile_bytes_get_a_precise_error(data: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        decode(data, 40_000_000)


@pytest.mark.parametrize("preprocess", [SQUASH, CROP], ids=["squash", "crop"])
def test_a_non_square_input_is_h_by_w(preprocess: Preprocess) -> None:
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    prepared = Preprocessor(preprocess, (32, 48), 100_000)(save(image, "PNG"), keep_image=True)
    assert prepared.pixels.shape == (3, 32, 48)  # (3, H, W)
    left, top, right, bottom = prepared.box
    assert 0 <= left < right <= 200 and 0 <= top < bottom <= 100


def test_every_image_suffix_names_a_format_the_transform_decodes(tmp_path: Path) -> None:
    from vit_core.images import FORMATS, IMAGE_SUFFIXES, image_files

    extensions = Image.registered_extensions()
    assert {extensions[s] for s in IMAGE_SUFFIXES} <= set(FORMATS)
    for name in ("a.JPG", "b.png", "c.txt", ".hidden.png", ".cache/d.png", "sub/e.tiff"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in image_files(tmp_path)] == [
        "a.JPG",
        "b.png",
        "sub/e.tiff",
    ]
    assert [p.name for p in image_files(tmp_path, recursive=False)] == ["a.JPG", "b.png"]
