"""Hostile-but-small images, built byte by byte: each costs the unguarded decoder seconds of CPU or
hundreds of MB from a few kB. Shared by the unit tests (tests/service) and the attacks run against
a real server (tests/e2e)."""

from __future__ import annotations

import io
import struct
import zlib

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
