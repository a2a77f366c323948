"""The transform's resampling passes (vit_core/resampling.py): fast_image_resize's SIMD convolution
computes Pillow's, to a level per pass, and the transform resamples horizontally first whichever
of the two runs."""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest
from PIL import Image

from vit_core import resampling
from vit_core.bundle import PixelFormat, Preprocess
from vit_core.images import transform
from vit_core.resampling import resample

FILTERS = [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR]
UINT8 = PixelFormat(dtype="uint8", layout="NHWC")
# Without cykooz.resizer both sides of a comparison would be Pillow's passes: nothing to test.
needs_simd = pytest.mark.skipif(not resampling.SIMD, reason="cykooz.resizer is not installed")


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    """Every level anywhere: the filters' overshoot and rounding all show."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


def checkerboard(w: int, h: int) -> Image.Image:
    """Black and white cells 4×3 px: sharp edges, where the order of the passes shows most."""
    cells = np.add.outer(np.arange(h) // 3, np.arange(w) // 4) % 2 * 255
    return Image.fromarray(cells.astype(np.uint8)[..., None].repeat(3, axis=-1))


def levels(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> int:
    return int(np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max())


def test_the_simd_resampler_is_installed_where_it_has_a_wheel() -> None:
    """x86-64 Linux (CI, the images) and Windows, and macOS, have cykooz.resizer's wheels, and
    pyproject.toml installs it there: the SIMD passes are what these tests and the service run."""
    if platform.machine() not in ("x86_64", "AMD64") and sys.platform != "darwin":
        pytest.skip("no cykooz.resizer wheel for this machine: Pillow's passes run")
    assert resampling.SIMD


def test_only_rgb_is_resampled() -> None:
    """fast_image_resize would hand back another mode as RGB where Pillow keeps it: the one
    transform converts first (load_rgb), and resample refuses what did not come through it."""
    with pytest.raises(ValueError, match="RGB images, not L"):
        resample(Image.new("L", (8, 8)), (4, 4), (0, 0, 8, 8), Image.Resampling.BICUBIC)


@pytest.mark.parametrize("filter_", FILTERS, ids=lambda f: f.name.lower())
@pytest.mark.parametrize(
    ("picture", "size", "box"),
    [
        ((320, 240), (224, 240), (0, 0, 320, 240)),  # a 640×480 JPEG at DCT scale 1/2, squashed
        ((224, 240), (224, 224), (0, 0, 224, 240)),  # its second pass
        ((480, 640), (224, 640), (31.7, 0, 448.3, 640)),  # a crop's columns, fractional
        ((224, 640), (224, 224), (0, 102.4, 224, 537.6)),  # and its rows
        ((13, 9), (224, 9), (0, 0, 13, 9)),  # enlarged
        ((1, 50), (224, 50), (0, 0, 1, 50)),  # one pixel wide
        ((4032, 30), (224, 30), (0, 0, 4032, 30)),  # 18× smaller: 72 taps a pixel
    ],
)
@needs_simd
def test_a_pass_is_pillows_to_one_level(
    filter_: Image.Resampling,
    picture: tuple[int, int],
    size: tuple[int, int],
    box: tuple[float, float, float, float],
) -> None:
    image = noise(*picture)
    got = resample(image, size, box, filter_)
    assert got.size == size and got.mode == "RGB"
    assert levels(got, image.resize(size, filter_, box=box)) <= 1


PREPROCESS = {
    f"{mode}-{interpolation}": Preprocess(
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        interpolation=interpolation,
        resize_mode=mode,
        crop_pct=0.875,
    )
    for mode in ("squash", "crop")
    for interpolation in ("bicubic", "bilinear")
}


@pytest.mark.parametrize("recipe", PREPROCESS)
@pytest.mark.parametrize("picture", [(320, 240), (240, 320), (300, 300), (97, 61)])
@needs_simd
def test_the_transform_is_the_same_on_either_resampler(
    recipe: str, picture: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where cykooz.resizer has no wheel the transform runs on Pillow's passes: within two
    levels (one a pass) of what the SIMD passes give."""
    p, image = PREPROCESS[recipe], noise(*picture, seed=picture[0])
    simd, box = transform(image, p, 224, UINT8)
    monkeypatch.setattr(resampling, "SIMD", False)
    pillow, pillow_box = transform(image, p, 224, UINT8)
    assert box == pillow_box
    assert simd.shape == pillow.shape == (224, 224, 3)
    assert levels(simd, pillow) <= 2


@pytest.mark.parametrize(
    "simd", [pytest.param(True, marks=needs_simd, id="simd"), pytest.param(False, id="pillow")]
)
@pytest.mark.parametrize("picture", [(240, 320), (320, 240), (300, 300)])
def test_the_horizontal_pass_goes_first(
    simd: bool, picture: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resampled the other way round, sharp edges move by far more than the two levels the
    passes' rounding allows: the order is part of the transform, whatever the picture's shape."""
    monkeypatch.setattr(resampling, "SIMD", simd)
    image, (w, h), bicubic = checkerboard(*picture), picture, Image.Resampling.BICUBIC
    got, _ = transform(image, PREPROCESS["squash-bicubic"], 224, UINT8)
    horizontal_first = image.resize((224, h), bicubic).resize((224, 224), bicubic)
    vertical_first = image.resize((w, 224), bicubic).resize((224, 224), bicubic)
    assert levels(horizontal_first, vertical_first) > 8  # the picture tells the orders apart
    assert levels(got, horizontal_first) <= 2
