"""Image headers that would cost Pillow more than their pixels (issue 22): TIFF strips and tags,
EXIF entries and values (in JPEG, PNG and WebP), and the parts of JPEG segments Pillow walks in
Python, priced by check_structure from the header bytes and refused (413) before Pillow starts;
real files, written by Pillow as cameras and scanners write them, pass and decode."""

from __future__ import annotations

import contextlib
import io
import struct

import hostile
import numpy as np
import pytest
from PIL import Image

from vit_core.errors import ImageTooLarge
from vit_core.image_costs import (
    MAX_EXIF_SEGMENTS,
    MAX_IFD_ENTRIES,
    MAX_IFD_VALUES,
    MAX_JPEG_TABLES,
    MAX_PHOTOSHOP_BLOCKS,
    MAX_TIFF_STRIPS,
    check_structure,
)
from vit_core.images import decode


def segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def in_jpeg(*segments: bytes) -> bytes:
    real = hostile.jpeg()
    return real[:2] + b"".join(segments) + real[2:]


def exif_values(kind: int, count: int) -> bytes:
    """EXIF whose IFD0 has one entry of `count` values of TIFF type `kind`, and a turn."""
    size = {3: 2, 5: 8}[kind]
    tags = [(274, 3, 1, struct.pack("<H", 6)), (1000, kind, count, b"\1" * (size * count))]
    return b"II*\0" + struct.pack("<I", 8) + hostile.ifd(tags, 8)


def photoshop(blocks: int) -> bytes:
    block = b"8BIM" + b"\4\4" + b"\0\0" + b"\0\0\0\0"  # code, empty padded name, empty data
    return b"Photoshop 3.0\0" + block * blocks


def png_with(chunk: bytes, data: bytes) -> bytes:
    base = hostile.png(8, 8)
    return base[:33] + hostile.png_chunk(chunk, data) + base[33:]


def webp_with_exif(exif: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "WEBP", exif=b"Exif\0\0" + exif)
    return buffer.getvalue()


HOSTILE = {
    "tiff-strips": (hostile.tiff(1, 4_000_000, 1), "stored in 4,000,000 strips or tiles"),
    "tiff-strips-bound": (hostile.tiff(1, MAX_TIFF_STRIPS + 1, 1), "strips or tiles, over"),
    "tiff-tags": (hostile.tiff(8, 8, extra_tags=65_526), "over 512 directory entries"),
    "bigtiff-tags": (hostile.tiff(8, 8, extra_tags=100_000, big=True), "directory entries"),
    "jpeg-exif-entries": (hostile.exif_jpeg(5_400), "EXIF has over 512 directory entries"),
    "jpeg-exif-rationals": (
        in_jpeg(segment(0xE1, b"Exif\0\0" + exif_values(5, MAX_IFD_VALUES + 1))),
        "EXIF holds over 2,048 numbers",
    ),
    "jpeg-exif-segments": (
        in_jpeg(*[segment(0xE1, b"Exif\0\0" + hostile.exif(2))] * (MAX_EXIF_SEGMENTS + 1)),
        "over 16 EXIF segments",
    ),
    "jpeg-tables": (
        in_jpeg(segment(0xDB, (b"\0" + b"\1" * 64) * (MAX_JPEG_TABLES + 1))),
        "over 32 quantisation tables",
    ),
    "jpeg-photoshop": (
        in_jpeg(*[segment(0xED, photoshop(MAX_PHOTOSHOP_BLOCKS // 2 + 1))] * 2),
        "over 1024 Photoshop resource blocks",
    ),
    "png-exif": (png_with(b"eXIf", hostile.exif(5_000)), "the PNG's EXIF has over 512"),
    "webp-exif": (webp_with_exif(hostile.exif(5_000)), "the WebP's EXIF has over 512"),
}


@pytest.mark.parametrize(("data", "message"), HOSTILE.values(), ids=HOSTILE.keys())
def test_headers_that_cost_more_than_their_pixels_are_refused_before_pillow_opens_them(
    data: bytes, message: str
) -> None:
    with pytest.raises(ImageTooLarge, match=message):
        check_structure(data)  # the walk alone: Pillow never sees the file
    with pytest.raises(ImageTooLarge, match="too costly to parse"):
        decode(data, 40_000_000)


def camera_exif() -> Image.Exif:
    """EXIF as a camera writes it: ~40 IFD0 entries, ~100 in Exif, 8 GPS, with rationals."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turned a quarter
    exif[0x011A], exif[0x011B], exif[0x0128] = 300.0, 300.0, 2
    exif[0x010F], exif[0x0110], exif[0x0131] = "Maker", "Model 7", "firmware 1.0"
    for k in range(33):
        exif[1000 + k] = k  # makers' private tags
    details = exif.get_ifd(0x8769)
    for k in range(100):
        details[1000 + k] = k
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (1.5, 2.25, 3.0), 3: "E", 4: (4.0, 5.0, 6.5), 6: 100.0})
    gps.update({7: (1.0, 2.0, 3.0), 18: "WGS-84", 29: "2024:01:01"})
    return exif


def encode(fmt: str, size: tuple[int, int] = (320, 240), **params: object) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).save(buffer, fmt, **params)
    return buffer.getvalue()


REAL = {
    "jpeg-camera-exif": encode("JPEG", exif=camera_exif().tobytes()),
    "png-exif": encode("PNG", exif=camera_exif().tobytes()),
    "webp-exif": encode("WEBP", exif=camera_exif().tobytes()),
    "tiff-deflate-400-strips": encode("TIFF", (300, 400), compression="tiff_deflate",
                                      strip_size=900),
    "tiff-lzw-exif": encode("TIFF", exif=camera_exif(), compression="tiff_lzw"),
    "tiff-raw-300-strips": hostile.tiff(300, 300, 1),
    "tiff-raw-at-the-bound": hostile.tiff(4, MAX_TIFF_STRIPS, 1),
    "bigtiff-raw-strips": hostile.tiff(64, 200, 2, big=True),
    "jpeg-exif-at-the-bound": hostile.exif_jpeg(MAX_IFD_ENTRIES),
    "jpeg-photoshop": in_jpeg(segment(0xED, photoshop(40))),
    "jpeg-four-tables": in_jpeg(segment(0xDB, (b"\0" + b"\1" * 64) * 4)),
}  # fmt: skip


@pytest.mark.parametrize("data", REAL.values(), ids=REAL.keys())
def test_real_files_inside_the_bounds_pass_and_decode(data: bytes) -> None:
    check_structure(data)
    image = decode(data, 40_000_000)
    assert image.mode == "RGB" and min(image.size) >= 1


def test_an_exif_turn_is_still_applied_once_priced() -> None:
    image = decode(REAL["jpeg-camera-exif"], 40_000_000)
    assert image.size == (240, 320)  # orientation 6: stored 320×240, shown turned


def test_later_tiff_pages_are_never_read_so_cost_nothing() -> None:
    """Pillow reads a TIFF's first page only: a second page of 65,535 entries is not priced,
    and the file decodes (its first page) as quickly as a one-page file."""
    first = hostile.tiff(8, 8)
    second_at = len(first)
    second = hostile.ifd(hostile.private_tags(65_535), second_at)
    ifd0 = struct.unpack_from("<I", first, 4)[0]
    count = struct.unpack_from("<H", first, ifd0)[0]
    next_at = ifd0 + 2 + 12 * count
    data = first[:next_at] + struct.pack("<I", second_at) + first[next_at + 4 :] + second
    check_structure(data)
    assert decode(data, 40_000_000).size == (8, 8)


@pytest.mark.parametrize("name", ["tiff", "bigtiff", "jpeg", "png", "webp"])
def test_mangled_headers_are_priced_or_passed_on_never_a_crash(name: str) -> None:
    """Random bytes changed in the header region: the walk answers ImageTooLarge or nothing
    (Pillow then decides), never an IndexError or struct.error that would be a 500."""
    data = {
        "tiff": REAL["tiff-raw-300-strips"],
        "bigtiff": REAL["bigtiff-raw-strips"],
        "jpeg": REAL["jpeg-camera-exif"],
        "png": REAL["png-exif"],
        "webp": REAL["webp-exif"],
    }[name]
    rng = np.random.default_rng(22)
    head = min(len(data), 4096)
    for _ in range(1500):
        mangled = bytearray(data)
        for at in rng.integers(0, head, rng.integers(1, 9)):
            mangled[at] = int(rng.integers(0, 256))
        if rng.random() < 0.2:
            mangled = mangled[: int(rng.integers(8, head))]
        with contextlib.suppress(ImageTooLarge):
            check_structure(bytes(mangled))
