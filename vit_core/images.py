"""THE image transform: bytes → checked, decoded, resized pixels, as the graph takes them. A
request's image becomes this before it joins a batch (in the preprocessing thread pool: PIL and
numpy release the GIL); training (model_export.training.data) and the exporter's parity check call
the same functions, so the model is trained, checked and served on identical pixels.

Preprocessing is the bundle's (model.json "preprocess"), done the way timm's eval transform does
it: squash straight to S×S, or resize the shorter side to floor(S / crop_pct) and take
the centre S×S; then x / 255, minus mean, over std. For an H×W input (H ≠ W),
timm's crop resizes straight to floor(H / crop_pct) × floor(W / crop_pct) before the centre crop,
and so does this.

Where the normalisation runs is the bundle's choice (model.json "pixels"): graphs exported since
schema 2 take the resized uint8 pixels and normalise in-graph, so the host never makes a float
copy of an image; older bundles take float32 pixels normalised here.

A JPEG can be decoded smaller: libjpeg-turbo scales inside its inverse DCT (1/2, 1/4, 1/8), at a
fraction of a full decode's cost. With `scaled_decode`, a JPEG is decoded at the
smallest of those scales whose picture still gives the resize at least one decoded pixel per
pixel it makes (`least_decode`), and, when a heat-map will be drawn, still covers its overview.
This is not bit-identical to a full decode (docs/benchmarks.md measures how close it is); other
formats, and `decode`, always decode in full.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from vit_core.bundle import LEGACY_PIXELS, PixelFormat, Preprocess
from vit_core.errors import EmptyBody, ImageTooLarge, InvalidImage
from vit_core.geometry import Box, Size, hw
from vit_core.image_costs import check_structure, dct_scale, decoded_bytes
from vit_core.memory import MemoryBudget
from vit_core.resampling import resample

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # PIL plugin names; nothing else is tried
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP or TIFF"
# The file names a folder's images go by (vit_client keeps a copy; a test ties the two).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # grey, 0..65535
_ALPHA = {"RGBA", "RGBa", "LA", "La", "PA"}
_BACKGROUND = (255, 255, 255)  # transparent pixels are shown over white, as a browser page would

OVERVIEW_SIDE = 1024  # a heat-map's picture is for looking at, not a copy of a 40 MP upload
_BAND_PIXELS = 1 << 20  # 16-bit → 8-bit conversion works on bands of about this many pixels
MiB = 1 << 20

WH = tuple[int, int]  # (width, height), upright
Reads = Callable[[WH], WH]  # an image's upright size → the least upright size its decode may have
_QUARTER_TURNS = {5, 6, 7, 8}  # EXIF orientations shown turned by 90°: stored W×H is seen H×W


@dataclass(frozen=True)
class Prepared:
    pixels: np.ndarray  # one row of a model input batch: (H, W, 3) uint8, or as PixelFormat says
    image: Image.Image | None  # the decoded RGB picture, kept only when a heat-map will be drawn
    # The part of the picture the model saw (all of it, or the centre crop): in `image`'s pixels
    # when it is kept, else in the file's own (upright) pixels, however it was decoded.
    box: Box


@dataclass(frozen=True)
class Preprocessor:
    """The bundle's preprocessing, bound: what serving calls on a request's bytes and training on
    a file's bytes, so both decode and transform through the same lines.

    Serving also passes the decode limits: `max_bytes` refuses one image whose decode would take
    more memory (413), and `memory` makes concurrent decodes share one byte budget; and chooses
    `scaled_decode` (on unless VIT_EXACT_DECODE=true). Training leaves it off: docs/design.md.
    """

    preprocess: Preprocess
    image_size: Size
    max_pixels: int
    pixels: PixelFormat = LEGACY_PIXELS  # what the graph takes (training: normalised float32)
    max_bytes: int | None = None  # estimated peak decode memory one image may take
    memory: MemoryBudget | None = None
    memory_wait_s: float = 30.0  # how long an image may wait for its share of the budget
    scaled_decode: bool = False  # JPEGs at the smallest DCT scale that covers what is read

    def __call__(self, data: bytes, keep_image: bool = False) -> Prepared:
        reads = partial(self._reads, keep_image) if self.scaled_decode else None
        image = open_image(data, self.max_pixels, self.max_bytes, reads)
        with self._held(decoded_bytes(image)):
            rgb = load_rgb(image)
            pixels, box = transform(rgb, self.preprocess, self.image_size, self.pixels)
            if not keep_image:
                return Prepared(pixels, None, _in_file_pixels(box, dct_scale(image)))
            small, small_box = overview(rgb, box)  # the full-size decode is freed here
        return Prepared(pixels, small, small_box)

    def price(self, data: bytes) -> None:
        """The checks of `__call__` that read only the header (structure, pixels, decode memory):
        what an image is refused for (400, 413) before any decoder sees it."""
        open_image(data, self.max_pixels, self.max_bytes)

    def _held(self, size: int) -> AbstractContextManager[None]:
        return self.memory.hold(size, self.memory_wait_s) if self.memory else nullcontext()

    def _reads(self, keep_image: bool, size: WH) -> WH:
        """What this transform reads from an image of upright `size`, and the overview too when
        a heat-map will be drawn (so the overview is as sharp as a full decode's)."""
        least = least_decode(self.preprocess, self.image_size)
        if not keep_image:
            return least
        shown = overview_size(size)
        return max(least[0], shown[0]), max(least[1], shown[1])


def least_decode(p: Preprocess, size: Size) -> WH:
    """The smallest upright (w, h) an image may be decoded at and still give `_resize` at least one
    decoded pixel per pixel it makes: the model's input when squashed; in crop mode the image the
    centre crop is cut from (the shorter side at floor(S / crop_pct), or timm's enlarged H×W)."""
    sh, sw = hw(size)
    if p.resize_mode == "squash":
        return sw, sh
    if sh == sw:
        short = math.floor(sh / p.crop_pct)
        return short, short  # both sides at least the shorter side's target
    return math.floor(sw / p.crop_pct), math.floor(sh / p.crop_pct)


def _in_file_pixels(box: Box, scale: int) -> Box:
    """A box in the pixels of a 1/scale decode → the file's pixels."""
    left, top, right, bottom = box
    return left * scale, top * scale, right * scale, bottom * scale


def transform(
    image: Image.Image, preprocess: Preprocess, size: Size, pixels: PixelFormat = LEGACY_PIXELS
) -> tuple[np.ndarray, Box]:
    """An upright RGB image (what `decode` returns) → (one row of pixels as `pixels` says, the box
    it saw). The default, (3, H, W) float32 normalised, is what training and PyTorch take."""
    if image.mode != "RGB":
        raise ValueError(f"transform takes RGB images (decode's output), not {image.mode}")
    resized, box = _resize(image, preprocess, hw(size))
    x: np.ndarray = np.asarray(resized)  # (H, W, 3) uint8: the only copy of the resized image
    if pixels.dtype == "float32":
        return normalise(x, preprocess), box
    return (x if pixels.layout == "NHWC" else np.ascontiguousarray(x.transpose(2, 0, 1))), box


@dataclass(frozen=True)
class ResizePlan:
    """How a w×h image becomes the model's input: resized to width × height, then the
    out = (H, W) window at (left, top) kept (all of it when squashed). One plan, whoever
    resizes: the passes here (vit_core/resampling.py), or the engine's resize graph on a device
    (service/inference)."""

    width: int
    height: int
    left: int
    top: int
    out: tuple[int, int]  # (H, W)

    def box(self, w: int, h: int) -> Box:
        """The part of the w×h image the model sees, in its pixels."""
        sx, sy = self.width / w, self.height / h  # resized pixels per original pixel
        oh, ow = self.out
        return self.left / sx, self.top / sy, (self.left + ow) / sx, (self.top + oh) / sy


def resize_plan(w: int, h: int, p: Preprocess, size: tuple[int, int]) -> ResizePlan:
    """The bundle's resize for an upright w×h image and the model's (H, W) input."""
    sh, sw = size
    if p.resize_mode == "squash":
        return ResizePlan(sw, sh, 0, 0, size)
    if sh == sw:  # the shorter side to floor(S / crop_pct), aspect kept
        short = math.floor(sh / p.crop_pct)
        scale = short / min(w, h)
        rw, rh = (max(short, round(side * scale)) for side in (w, h))
    else:  # timm's rule for an (H, W) size: straight to the enlarged H×W
        rw, rh = math.floor(sw / p.crop_pct), math.floor(sh / p.crop_pct)
    return ResizePlan(rw, rh, round((rw - sw) / 2), round((rh - sh) / 2), size)


def _resize(image: Image.Image, p: Preprocess, size: tuple[int, int]) -> tuple[Image.Image, Box]:
    w, h = image.size
    plan, (sh, sw), filter_ = resize_plan(w, h, p, size), size, _RESAMPLE[p.interpolation]
    box = plan.box(w, h)
    if filter_ == Image.Resampling.NEAREST:  # cheap whole; a box moves its ties by a pixel
        whole = image.resize((plan.width, plan.height), filter_)
        if (plan.width, plan.height) == (sw, sh):
            return whole, box
        return whole.crop((plan.left, plan.top, plan.left + sw, plan.top + sh)), box
    # One pass per axis, the horizontal first, as Pillow up to version 12 resized a picture in
    # one call: given both axes, Pillow 13 and fast_image_resize each pick an order by its shape,
    # and the 8-bit rounding between the passes then moves sharp edges by tens of levels. This
    # way the SIMD passes and Pillow's agree to within 2 levels (vit_core/resampling.py).
    # In crop mode only the part the centre crop keeps is resampled: 0.65-0.82x the time of
    # resizing the whole picture and cropping (bench/crop_resize.py), the same taps.
    left, top, right, bottom = box[0], box[1], min(box[2], w), min(box[3], h)
    columns = image  # (h, sw): every row, the crop's columns
    if (sw, left, right) != (w, 0, w):
        columns = resample(image, (sw, h), (left, 0, right, h), filter_)
    if (sh, top, bottom) == (h, 0, h):
        return columns, box
    return resample(columns, (sw, sh), (0, top, sw, bottom), filter_), box


def normalise(pixels: np.ndarray, p: Preprocess) -> np.ndarray:
    """(H, W, 3) uint8 → (3, H, W) float32, (x / 255 - mean) / std: what a uint8 graph computes."""
    x: np.ndarray = pixels.astype(np.float32) / np.float32(255)  # (H, W, 3) in [0, 1]
    x = (x - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, H, W)


def overview(image: Image.Image, box: Box) -> tuple[Image.Image, Box]:
    """A copy at most OVERVIEW_SIDE pixels on its longer side (and the box in its pixels): what a
    heat-map is drawn over, kept instead of a decode that may be 40 MP."""
    scale = _overview_scale(image.size)
    if scale == 1.0:
        return image, box
    left, top, right, bottom = box
    w, h = image.size  # a picture for people: either order of the passes will do
    small = resample(image, overview_size(image.size), (0, 0, w, h), Image.Resampling.BILINEAR)
    return small, (left * scale, top * scale, right * scale, bottom * scale)


def overview_size(size: WH) -> WH:
    """The size of an image's overview: at most OVERVIEW_SIDE on its longer side."""
    scale = _overview_scale(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _overview_scale(size: WH) -> float:
    return min(1.0, OVERVIEW_SIDE / max(size))


def image_files(folder: Path, recursive: bool = True) -> list[Path]:
    """A folder's images by name, sorted: files with an image suffix (any case), none hidden
    (no part of the path below `folder` starting with "."). Whether each decodes is the caller's
    to find out, and to report."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def decode(data: bytes, max_pixels: int, max_bytes: int | None = None) -> Image.Image:
    """An RGB image, upright, or the precise reason it cannot be one."""
    return load_rgb(open_image(data, max_pixels, max_bytes))


def open_image(
    data: bytes, max_pixels: int, max_bytes: int | None = None, reads: Reads | None = None
) -> Image.Image:
    """The image, opened but not decoded, once its header says it is affordable.

    Only headers are read here, so a decompression bomb (a few kB declaring a gigapixel) or a
    header built to make the parser loop (image_costs) is refused before any work is done. With
    `reads`, a JPEG is set to decode at the smallest DCT scale that keeps `reads(its size)`, and
    its cost is that decode's.
    """
    if not data:
        raise EmptyBody("the image is empty (0 bytes)")
    check_structure(data)
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"the image declares too many pixels (limit {max_pixels:,})") from e
    except UnidentifiedImageError as e:
        raise InvalidImage(f"not a {FORMAT_NAMES} image") from e
    except Exception as e:  # PIL plugins raise assorted errors on malformed headers
        raise InvalidImage("the image header is truncated or corrupt") from e
    w, h = image.size
    if w * h > max_pixels:
        raise ImageTooLarge(f"the image is {w}×{h} = {w * h:,} pixels; the limit is {max_pixels:,}")
    if w < 1 or h < 1:
        raise InvalidImage(f"the image is {w}×{h} pixels")
    if reads is not None and image.format == "JPEG":
        _draft(image, reads)
    cost = decoded_bytes(image)
    if max_bytes is not None and cost > max_bytes:
        raise ImageTooLarge(
            f"decoding this {w}×{h} {image.mode} image takes about {cost / MiB:,.0f} MiB; the "
            f"limit is {max_bytes / MiB:,.0f} MiB"
        )
    return image


def _draft(image: Image.Image, reads: Reads) -> None:
    """Set a JPEG to decode at 1/2, 1/4 or 1/8 where that still keeps `reads` in both axes.

    Pillow's draft picks the largest scale s with the stored size // s ≥ the size asked, in
    both axes, and libjpeg-turbo then decodes to ceil(W / s) × ceil(H / s), CMYK and grey
    included; the EXIF turn is applied afterwards (load_rgb), so a quarter-turned file is asked
    for the transposed size.
    """
    try:
        turned = image.getexif().get(ExifTags.Base.Orientation) in _QUARTER_TURNS
    except Exception as e:  # malformed EXIF: the same verdict load_rgb would give
        raise InvalidImage("the JPEG image is truncated or corrupt") from e
    stored = image.size
    w, h = reads(stored[::-1] if turned else stored)
    image.draft(None, (max(1, h), max(1, w)) if turned else (max(1, w), max(1, h)))


def load_rgb(image: Image.Image) -> Image.Image:
    """Decode an opened image: its first frame, upright (EXIF), as 8-bit RGB."""
    try:
        image.load()  # the first frame of a GIF, WebP or TIFF; decoding errors surface here
        ImageOps.exif_transpose(image, in_place=True)  # a copy of an upright image otherwise
    except Exception as e:  # truncated data, corrupt streams, bad EXIF: all the client's image
        raise InvalidImage(f"the {image.format} image is truncated or corrupt") from e
    try:
        return to_rgb(image)
    except ValueError as e:  # a mode PIL cannot convert, e.g. LAB or HSV
        raise InvalidImage(f"the image's colour mode {image.mode} cannot be shown as RGB") from e


def to_rgb(image: Image.Image) -> Image.Image:
    """Grey, palette, CMYK, 16-bit and transparent images → 8-bit RGB."""
    if image.mode in _SIXTEEN_BIT:
        image = Image.fromarray(_to_8_bit(np.asarray(image)), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    if image.mode in _ALPHA or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")  # convert would copy an RGB one


def _to_8_bit(grey: np.ndarray) -> np.ndarray:
    """(H, W) 0..65535 grey → uint8, round(x / 257), a band of rows at a time so the integer
    temporaries stay small (a float64 copy of a 40 MP image would be 320 MB)."""
    out = np.empty(grey.shape, np.uint8)
    rows = max(1, _BAND_PIXELS // max(1, grey.shape[1]))
    for top in range(0, grey.shape[0], rows):
        band = np.clip(grey[top : top + rows].astype(np.int32), 0, 65535)
        out[top : top + rows] = (band + 128) // 257  # 257 is odd: never a tie to round
    return out
