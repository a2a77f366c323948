"""Hostile-but-small images, built byte by byte: each costs the unguarded decoder seconds of CPU or
hundreds of MB from a few kB. Shared by the unit tests (tests/service) and the attacks run against
a real server (tests/e2e)."""

from __future__ import annotations

import io
import struct
import zlib
from itertools import accumulate

import numpy as np
from PIL import Image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(
    width: int, height: int, depth: int = 8, colour: int = 2, rows: bytes | None = None
) -> bytes:
    """A PNG of width × height (colour 0: grey, 2: RGB); rows: the raw scanlines, else none."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    idat = zlib.compress(rows if rows is not None else b"\x00" * 1024, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def grey16_png(width: int, height: int) -> bytes:
    """A real, fully decodable 16-bit grey PNG: all-zero rows deflate to almost nothing."""
    row = b"\x00" + b"\x00" * (2 * width)  # filter byte + 2 bytes a pixel
    return png(width, height, depth=16, colour=0, rows=row * height)


def many_chunks_png(chunks: int) -> bytes:
    base = png(8, 8)
    text = png_chunk(b"tEXt", b"k\x00v")
    return base[:33] + text * chunks + base[33:]  # after the 8-byte signature and 25-byte IHDR


def jpeg(width: int = 32, height: int = 24) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def many_markers_jpeg(markers: int) -> bytes:
    """Empty APP15 segments (4 bytes each) between SOI and the rest of a real JPEG."""
    real = jpeg()
    return real[:2] + b"\xff\xef\x00\x02" * markers + real[2:]


def junk_jpeg(junk: int) -> bytes:
    """Stray bytes after the first segment, which Pillow skips one Python step at a time."""
    real = jpeg()
    end = 4 + int.from_bytes(real[4:6], "big")  # SOI, then APP0: marker + its length
    return real[:end] + b"\x00" * junk + real[end:]


def many_blocks_gif(blocks: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (8, 8)).save(buffer, "GIF")
    real = buffer.getvalue()
    start = 13 + (3 << ((real[10] & 7) + 1) if real[10] & 0x80 else 0)
    comment = b"\x21\xfe" + b"\x01x" * blocks + b"\x00"  # a comment of one-byte sub-blocks
    return real[:start] + comment + real[start:]


def rle_bmp(width: int, height: int) -> bytes:
    """An RLE8 BMP of width × height: per row one pixel, then end-of-line, which Pillow's Python
    decoder pads to the row's end a byte at a time: 4 bytes of input, `width` Python steps."""
    data = b"\x01\x00\x00\x00" * height + b"\x00\x01"
    palette = b"\x00\x00\x00\x00" * 256
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    header = b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset)
    return header + info + palette + data


# -- TIFF and EXIF: image file directories (IFDs), which Pillow reads an entry and a strip at a time


def ifd(entries: list[tuple[int, int, int, bytes]], at: int, big: bool = False) -> bytes:
    """A little-endian IFD placed at offset `at`: (tag, type, count, value bytes) each, values
    over 4 bytes (8 in BigTIFF) stored after it; the next-IFD offset is 0."""
    head, slot = (struct.Struct("<HHQ"), 8) if big else (struct.Struct("<HHI"), 4)
    count = struct.pack("<Q" if big else "<H", len(entries))
    table = len(count) + len(entries) * (head.size + slot) + slot
    out, tail = [count], []
    offset = at + table
    for tag, kind, n, value in entries:
        if len(value) <= slot:
            out.append(head.pack(tag, kind, n) + value.ljust(slot, b"\0"))
        else:
            out.append(head.pack(tag, kind, n) + offset.to_bytes(slot, "little"))
            tail.append(value)
            offset += len(value)
    out.append(b"\0" * slot)
    return b"".join(out + tail)


def private_tags(n: int) -> list[tuple[int, int, int, bytes]]:
    """n SHORT entries of tags no reader knows (1000–32767 are unassigned; repeats past that)."""
    return [(1000 + i % 31_768, 3, 1, struct.pack("<H", i & 0xFFFF)) for i in range(n)]


def tiff(
    width: int,
    height: int,
    rows_per_strip: int | None = None,
    extra_tags: int = 0,
    big: bool = False,
) -> bytes:
    """An uncompressed 8-bit grey TIFF of width × height in strips of `rows_per_strip` rows (all
    rows in one strip when None), its IFD 9 entries and `extra_tags` private tags (SHORT, one
    value each; an IFD holds at most 65,535): decodable, and grey 0x80 throughout."""
    rows = rows_per_strip or height
    strips = -(-height // rows)
    sizes = [width * min(rows, height - i * rows) for i in range(strips)]
    kind, code = (16, "Q") if big else (4, "I")  # LONG8 in BigTIFF, else LONG

    def longs(values: list[int], kind: int = kind, code: str = code) -> bytes:
        return struct.pack(f"<{len(values)}{code}", *values)

    header = b"II+\0" + struct.pack("<HHQ", 8, 0, 16) if big else b"II*\0" + struct.pack("<I", 8)
    entries: list[tuple[int, int, int, bytes]] = [
        (256, 4, 1, struct.pack("<I", width)),
        (257, 4, 1, struct.pack("<I", height)),
        (258, 3, 1, struct.pack("<H", 8)),
        (259, 3, 1, struct.pack("<H", 1)),  # no compression
        (262, 3, 1, struct.pack("<H", 1)),  # black is zero
        (273, kind, strips, b""),  # strip offsets: filled in below
        (277, 3, 1, struct.pack("<H", 1)),
        (278, 4, 1, struct.pack("<I", rows)),
        (279, 3, strips, longs(sizes, 3, "H"))
        if max(sizes) < 1 << 16
        else (279, kind, strips, longs(sizes)),  # byte counts as SHORTs when they fit
    ]
    entries += private_tags(extra_tags)
    at = len(header)
    # Strip offsets depend on the IFD's size, which does not depend on their values.
    entries[5] = (273, kind, strips, longs([0] * strips))
    size = len(ifd(entries, at, big))
    starts = list(accumulate(sizes[:-1], initial=at + size))
    entries[5] = (273, kind, strips, longs(starts))
    return header + ifd(entries, at, big) + b"\x80" * sum(sizes)


def exif(entries: int, orientation: int = 1) -> bytes:
    """An EXIF block (what APP1 carries after "Exif\\0\\0"): a TIFF header and an IFD0 of an
    orientation and `entries - 1` private tags."""
    tags = [(274, 3, 1, struct.pack("<H", orientation))]
    tags += private_tags(entries - 1)
    return b"II*\0" + struct.pack("<I", 8) + ifd(tags, 8)


def exif_jpeg(entries: int, orientation: int = 1, width: int = 32, height: int = 24) -> bytes:
    """A real JPEG with an APP1 EXIF segment of `entries` IFD0 entries (at most ~5,450 fit)."""
    real = jpeg(width, height)
    body = b"Exif\0\0" + exif(entries, orientation)
    return real[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + real[2:]
