"""One resampling pass of an RGB image, with Pillow's filters and Pillow's rounding, on SIMD code
where it is installed.

Pillow's convolution is a scalar C loop: resizing the 320×240 picture a 640×480 JPEG decodes to
at DCT scale 1/2 into 224×224 was a third of the engine's CPU per image. fast_image_resize (Rust,
AVX2 / SSE4.1 / NEON, picked at run time; the `cykooz.resizer` wheel) computes the same
convolution, the same filters over the same support, with 8-bit results, in 0.12–0.33 of the
time (bench/resize.py). Its coefficients are rounded differently, so a pass may differ from
Pillow's by one level; two passes by two (tests/core/test_resampling.py).

Where its wheel does not exist (pyproject.toml installs it only where one does; not on Linux on
ARM) Pillow's own loop runs. Either way the model's transform resamples one axis per call, and
vit_core.images says in which order.
"""

from __future__ import annotations

from PIL import Image

from vit_core.geometry import Box

try:
    from cykooz_resizer import CropBox, FilterType, ResizeAlg, ResizeOptions, Resizer
except ImportError:  # no wheel for this platform
    SIMD = False
else:
    SIMD = True
    # Pillow's BICUBIC is the cubic with a = -0.5, Catmull-Rom's; both widen it by the scale
    # when shrinking (antialiasing), as Pillow does.
    _ALGORITHMS = {
        Image.Resampling.BICUBIC: ResizeAlg.convolution(FilterType.catmull_rom),
        Image.Resampling.BILINEAR: ResizeAlg.convolution(FilterType.bilinear),
    }


def resample(
    image: Image.Image, size: tuple[int, int], box: Box, filter_: Image.Resampling
) -> Image.Image:
    """The `box` of an RGB image resampled to `size` (width, height) with `filter_`, as Pillow's
    `image.resize(size, filter_, box=box)` computes it. Releases the GIL either way."""
    if image.mode != "RGB":  # fast_image_resize would turn another mode into RGB, Pillow not
        raise ValueError(f"resample takes RGB images, not {image.mode}")
    if not (SIMD and filter_ in _ALGORITHMS):  # nearest: Pillow's, which is a copy loop anyway
        return image.resize(size, filter_, box=box)
    left, top, right, bottom = box
    options = ResizeOptions(resize_alg=_ALGORITHMS[filter_])
    options.crop_box = CropBox(left, top, right - left, bottom - top)
    out = Image.new("RGB", size, None)  # not cleared: every pixel is written
    Resizer().resize_pil(image, out, options)  # a Resizer costs ~1 µs; one per call, no sharing
    return out
