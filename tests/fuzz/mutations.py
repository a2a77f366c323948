"""Hypothesis strategies for hostile image bytes: the committed corpus (tiny valid images, see
make_corpus.py), mutated the way a fuzzer does it (byte flips, truncations, insertions,
deletions, repeated slices) and the way a malicious file does it (a header field such as a
width, a bit depth or a chunk length set to an extreme value).

`corpus()` and `hostile_images()` are used by the decode fuzz and by the schema run against the
real server, so both see the same inputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hypothesis import strategies as st

CORPUS_DIR = Path(__file__).parent / "corpus"
CORPUS: dict[str, bytes] = {p.name: p.read_bytes() for p in sorted(CORPUS_DIR.iterdir())}


@dataclass(frozen=True)
class Field:
    """A header field: where to find it (a marker's regex), how far past the marker, its size."""

    marker: bytes
    offset: int
    size: int  # bytes
    order: Literal["big", "little"] = "big"


_SOF = rb"\xff[\xc0-\xc3]"  # JPEG start of frame: length(2) precision(1) height(2) width(2) N(1)
_TIFF_ENTRY = rb"%b[\x03\x04]\x00"  # a little-endian IFD entry: tag, type SHORT or LONG
FIELDS = (
    # PNG IHDR: width, height, bit depth, colour type; every chunk's length
    Field(rb"IHDR", 4, 4), Field(rb"IHDR", 8, 4), Field(rb"IHDR", 12, 1), Field(rb"IHDR", 13, 1),
    Field(rb"(?=(?:IHDR|PLTE|tRNS|IDAT|IEND))", -4, 4),
    # JPEG: frame precision, height, width, components; segment lengths; EXIF orientation
    Field(_SOF, 4, 1), Field(_SOF, 5, 2), Field(_SOF, 7, 2), Field(_SOF, 9, 1),
    Field(rb"\xff[\xc4\xda\xdb\xe0\xe1]", 2, 2), Field(rb"\x12\x01\x03\x00", 8, 2, "little"),
    # GIF: screen width and height, first image's width and height, LZW minimum code size
    Field(rb"^GIF8[79]a", 6, 2, "little"), Field(rb"^GIF8[79]a", 8, 2, "little"),
    Field(rb"\x2c\x00\x00\x00\x00", 5, 2, "little"), Field(rb"\x2c\x00\x00\x00\x00", 9, 1),
    # BMP: pixel data offset, width, height, bits per pixel, compression, colours used
    Field(rb"^BM", 10, 4, "little"), Field(rb"^BM", 18, 4, "little"),
    Field(rb"^BM", 22, 4, "little"), Field(rb"^BM", 28, 2, "little"),
    Field(rb"^BM", 30, 4, "little"), Field(rb"^BM", 46, 4, "little"),
    # WebP: RIFF and chunk sizes, VP8 width and height, VP8L packed size, VP8X canvas
    Field(rb"^RIFF", 4, 4, "little"), Field(rb"VP8[ LX]", 4, 4, "little"),
    Field(rb"VP8 ", 14, 2, "little"), Field(rb"VP8 ", 16, 2, "little"),
    Field(rb"VP8L", 9, 4, "little"), Field(rb"VP8X", 12, 3, "little"),
    # TIFF: width, length, bits per sample, compression, strip offsets, samples, rows, byte counts
    *(Field(_TIFF_ENTRY % tag.to_bytes(2, "little"), 8, 4, "little")
      for tag in (256, 257, 258, 259, 273, 277, 278, 279)),
)  # fmt: skip


def field_positions(data: bytes) -> list[tuple[int, Field]]:
    """Every (byte offset, field) of FIELDS found in data that lies wholly inside it."""
    found = []
    for field in FIELDS:
        for match in re.finditer(field.marker, data, re.DOTALL):
            start = match.start() + field.offset
            if 0 <= start <= len(data) - field.size:
                found.append((start, field))
    return found


def extremes(size: int) -> list[int]:
    """The values that break parsers: zero, one, and the edges of signed and unsigned ranges."""
    top = 1 << (8 * size)
    return sorted({0, 1, 2, top // 2 - 1, top // 2, top - 2, top - 1})


@st.composite
def set_field(draw: st.DrawFn, data: bytes) -> bytes:
    """One header field set to an extreme or arbitrary value (or a byte flip if none is found)."""
    positions = field_positions(data)
    if not positions:
        return draw(flip_byte(data))
    start, field = draw(st.sampled_from(positions))
    top = (1 << (8 * field.size)) - 1
    value = draw(st.sampled_from(extremes(field.size)) | st.integers(0, top))
    encoded = value.to_bytes(field.size, field.order)
    return data[:start] + encoded + data[start + field.size :]


@st.composite
def flip_byte(draw: st.DrawFn, data: bytes) -> bytes:
    i = draw(st.integers(0, len(data) - 1))
    return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]


@st.composite
def truncate(draw: st.DrawFn, data: bytes) -> bytes:
    return data[: draw(st.integers(1, len(data) - 1))]


@st.composite
def insert(draw: st.DrawFn, data: bytes) -> bytes:
    i = draw(st.integers(0, len(data)))
    return data[:i] + draw(st.binary(min_size=1, max_size=64)) + data[i:]


@st.composite
def delete(draw: st.DrawFn, data: bytes) -> bytes:
    i = draw(st.integers(0, len(data) - 2))
    j = draw(st.integers(i + 1, min(len(data) - 1, i + 64)))
    return data[:i] + data[j:]


@st.composite
def repeat(draw: st.DrawFn, data: bytes) -> bytes:
    """A slice repeated: the way a chunk or marker segment gets duplicated."""
    i = draw(st.integers(0, len(data) - 2))
    j = draw(st.integers(i + 1, min(len(data), i + 64)))
    return data[:j] + data[i:j] * draw(st.integers(1, 8)) + data[j:]


MUTATIONS = (set_field, flip_byte, truncate, insert, delete, repeat)


def corpus() -> st.SearchStrategy[bytes]:
    return st.sampled_from(list(CORPUS.values()))


@st.composite
def mutated(draw: st.DrawFn, max_mutations: int = 4) -> bytes:
    """A corpus file with 1 to max_mutations mutations applied in turn."""
    data = draw(corpus())
    for _ in range(draw(st.integers(1, max_mutations))):
        if len(data) < 2:
            break
        mutate = draw(st.sampled_from(MUTATIONS))
        data = draw(mutate(data))
    return data


def hostile_images() -> st.SearchStrategy[bytes]:
    """Mostly mutated corpus files, some intact ones (the success path must hold too)."""
    return st.one_of(mutated(), corpus())
