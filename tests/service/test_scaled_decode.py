"""The scaled JPEG decode: the scale it picks, and that orientation, colour modes, the crop box,
the heat-map overview and the memory it reserves stay right."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hosted import local_app
from PIL import Image

from service.settings import Settings
from vit_core.bundle import Preprocess
from vit_core.errors import ImageTooLarge
from vit_core.image_costs import dct_scale, decoded_bytes
from vit_core.images import (
    OVERVIEW_SIDE,
    Preprocessor,
    Size,
    least_decode,
    load_rgb,
    open_image,
    overview_size,
)

SQUASH = Preprocess(
    mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic", resize_mode="squash", crop_pct=1.0
)
CROP = Preprocess(
    mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear", resize_mode="crop", crop_pct=0.875
)
QUADRANTS = ((230, 30, 30), (30, 200, 40), (40, 40, 220), (240, 220, 40))  # TL, TR, BL, BR
MAX_PIXELS = 40_000_000
JPEG = {"Content-Type": "image/jpeg"}


def quadrants(width: int, height: int) -> Image.Image:
    """Four flat colours, one a quarter, so a picture turned or mirrored shows it."""
    pixels = np.empty((height, width, 3), np.uint8)  # (H, W, 3)
    h, w = height // 2, width // 2
    for i, (rows, cols) in enumerate([(np.s_[:h], np.s_[:w]), (np.s_[:h], np.s_[w:]),
                                      (np.s_[h:], np.s_[:w]), (np.s_[h:], np.s_[w:])]):  # fmt: skip
        pixels[rows, cols] = QUADRANTS[i]
    return Image.fromarray(pixels)


def jpeg(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **params)
    return buffer.getvalue()


def both(
    preprocess: Preprocess, size: Size, max_bytes: int | None = None
) -> tuple[Preprocessor, Preprocessor]:
    """(the exact path, the scaled path) for one model input."""
    exact = Preprocessor(preprocess, size, MAX_PIXELS, max_bytes=max_bytes, scaled_decode=False)
    return exact, Preprocessor(
        preprocess, size, MAX_PIXELS, max_bytes=max_bytes, scaled_decode=True
    )


def scale_for(data: bytes, preprocess: Preprocess, size: Size) -> int:
    least = least_decode(preprocess, size)
    return dct_scale(open_image(data, MAX_PIXELS, None, lambda _: least))


@pytest.mark.parametrize(
    ("preprocess", "size", "least"),
    [
        (SQUASH, 32, (32, 32)),
        (SQUASH, (32, 48), (48, 32)),
        (CROP, 32, (36, 36)),
        (CROP, (32, 48), (54, 36)),
    ],  # fmt: skip
    ids=["squash", "squash-hw", "crop", "crop-hw"],
)
def test_the_least_decode_is_what_the_resize_reads(
    preprocess: Preprocess, size: Size, least: tuple[int, int]
) -> None:
    assert least_decode(preprocess, size) == least  # (w, h): crop reads floor(S / 0.875) = 36


@pytest.mark.parametrize(
    ("width", "height", "preprocess", "scale"),
    [
        (256, 256, SQUASH, 8),
        (255, 256, SQUASH, 4),
        (63, 500, SQUASH, 1),
        (288, 288, CROP, 8),
        (287, 288, CROP, 4),
        (1000, 71, CROP, 1),
    ],  # fmt: skip
)
def test_the_scale_is_the_smallest_that_still_covers_the_input(
    width: int, height: int, preprocess: Preprocess, scale: int
) -> None:
    data = jpeg(quadrants(width, height))
    assert scale_for(data, preprocess, 32) == scale
    least = least_decode(preprocess, 32)
    rgb = load_rgb(open_image(data, MAX_PIXELS, None, lambda _: least))
    assert rgb.size == (-(-width // scale), -(-height // scale))  # libjpeg rounds up
    assert rgb.width >= least[0] and rgb.height >= least[1]


def test_a_scaled_decode_sees_nearly_the_pixels_of_a_full_one() -> None:
    data = jpeg(quadrants(1600, 1200))
    exact, fast = both(SQUASH, 32)
    assert scale_for(data, SQUASH, 32) == 8
    difference = np.abs(exact(data).pixels - fast(data).pixels) * 127.5  # in 0..255 levels
    assert difference.mean() < 1.5 and np.percentile(difference, 90) < 2


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_turns_are_applied_and_the_turned_size_is_what_must_be_covered(
    orientation: int,
) -> None:
    """Stored 512×128, shown 128×512 when a quarter turn: a (H, W) = (16, 64) input needs the
    upright image at least 64 wide, which only the turned request for (16, 64) stored keeps."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg(quadrants(512, 128), exif=exif)
    size = (16, 64) if orientation != 3 else (64, 16)  # (H, W): a squash of the upright picture
    least = least_decode(SQUASH, size)
    rgb = load_rgb(open_image(data, MAX_PIXELS, None, lambda _: least))
    assert rgb.width >= least[0] and rgb.height >= least[1]
    assert rgb.size[0] < rgb.size[1] if orientation != 3 else rgb.size[0] > rgb.size[1]
    exact, fast = both(SQUASH, size)
    difference = np.abs(exact(data).pixels - fast(data).pixels) * 127.5
    assert np.percentile(difference, 90) < 3  # turned the same way: a wrong turn is 100s off


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grey_and_cmyk_jpegs_scale_and_come_out_rgb(mode: str) -> None:
    data = jpeg(quadrants(800, 800).convert(mode))
    exact, fast = both(SQUASH, 32)
    assert scale_for(data, SQUASH, 32) == 8
    difference = np.abs(exact(data).pixels - fast(data).pixels) * 127.5
    assert fast(data).pixels.shape == (3, 32, 32) and np.percentile(difference, 90) < 3


def test_other_formats_are_decoded_in_full() -> None:
    buffer = io.BytesIO()
    quadrants(800, 600).save(buffer, "PNG")
    exact, fast = both(SQUASH, 32)
    np.testing.assert_array_equal(exact(buffer.getvalue()).pixels, fast(buffer.getvalue()).pixels)


@pytest.mark.parametrize("preprocess", [SQUASH, CROP], ids=["squash", "crop"])
def test_the_crop_box_is_in_the_files_pixels(preprocess: Preprocess) -> None:
    data = jpeg(quadrants(900, 500))
    exact, fast = both(preprocess, 32)
    assert scale_for(data, preprocess, 32) >= 4
    assert fast(data).box == pytest.approx(exact(data).box, abs=8)  # within one 1/8 pixel


@pytest.mark.parametrize("width", [800, 3000])
def test_a_heat_map_overview_is_as_large_as_a_full_decodes(width: int) -> None:
    data = jpeg(quadrants(width, width // 3))
    exact, fast = both(CROP, 32)
    a, b = exact(data, keep_image=True), fast(data, keep_image=True)
    assert a.image is not None and b.image is not None
    assert b.image.size == pytest.approx(a.image.size, abs=1)
    assert b.image.size == pytest.approx(overview_size((width, width // 3)), abs=1)
    assert b.box == pytest.approx(a.box, abs=2)  # the heat-map lands where the model looked


def test_a_scaled_progressive_decode_reserves_its_full_size_coefficients() -> None:
    """libjpeg keeps a progressive file's coefficients at full size whatever the scale: 2 bytes
    a sample. The reservation counts them, and is still far below a full decode's."""
    data = jpeg(quadrants(2000, 1500), progressive=True, subsampling=0)
    least = least_decode(SQUASH, 32)
    scaled = open_image(data, MAX_PIXELS, None, lambda _: least)
    full = open_image(data, MAX_PIXELS)
    assert dct_scale(scaled) == 8 and decoded_bytes(scaled) > 2 * 3 * 2000 * 1500
    assert decoded_bytes(scaled) < decoded_bytes(full) / 2


def test_an_image_too_costly_to_decode_in_full_is_served_when_scaled() -> None:
    data = jpeg(quadrants(2000, 1500))  # in full ~40 MiB; at 1/8 ~18 MiB with the coefficients
    exact, fast = both(SQUASH, 32, max_bytes=32 << 20)
    with pytest.raises(ImageTooLarge, match="2000×1500 RGB image takes about 40 MiB"):
        exact(data)
    assert fast(data).pixels.shape == (3, 32, 32)


def test_the_setting_reaches_the_decoder_and_the_heat_map_keeps_the_files_shape(
    tiny_bundle: Path,
) -> None:
    """The same app with and without VIT_EXACT_DECODE: a large JPEG's embedding moves (it was
    decoded at 1/8), a small one's does not, and /attention draws over the file's overview."""
    grainy = np.random.default_rng(0).integers(0, 256, (600, 900, 3), dtype=np.uint8)
    large, small = jpeg(Image.fromarray(grainy)), jpeg(Image.fromarray(grainy[:60, :60]))
    embeddings, wide = {}, jpeg(quadrants(3000, 1000))
    for exact in (True, False):
        settings = Settings(
            bundle=tiny_bundle, providers="cpu", max_batch_size=1, exact_decode=exact
        )
        with local_app(settings) as app, TestClient(app) as c:
            deadline = time.monotonic() + 60
            while c.get("/readyz").status_code != 200:  # warming up
                assert time.monotonic() < deadline, "the app never became ready"
                time.sleep(0.02)
            embeddings[exact] = [embed(c, data) for data in (large, small)]
            answer = c.post("/attention?format=png", content=wide, headers=JPEG)
            assert Image.open(io.BytesIO(answer.content)).size == (OVERVIEW_SIDE, 341)
    assert not np.array_equal(embeddings[True][0], embeddings[False][0])
    np.testing.assert_array_equal(embeddings[True][1], embeddings[False][1])


def embed(client: TestClient, data: bytes) -> np.ndarray:
    answer = client.post("/embed", content=data, headers=JPEG)
    return np.asarray(answer.json()["results"][0]["embedding"], np.float32)
