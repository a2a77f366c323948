"""What an encoded image will cost, known before it is decoded, and refused (413) when too much.

Pillow parses some headers in Python, one step per marker, chunk, block or run: a JPEG of a
million empty APP markers (or megabytes of junk between markers), a PNG of a million tiny chunks,
a GIF of a million empty extension sub-blocks, or an RLE-compressed BMP (a pure-Python decoder, a
step per pixel) cost seconds to minutes of CPU from a few kB. `check_structure` walks those
headers itself in a bounded number of steps and refuses before Pillow starts. Real files are far
inside the bounds: a JPEG has 5–30 segments before its scan, a PNG a few chunks plus one IDAT
per 8–64 kB, a GIF a handful of extension blocks.

TIFF's image file directories (IFDs) are the same hazard in a finer grain, and EXIF is a TIFF
structure inside a JPEG, PNG or WebP. Pillow reads a directory an entry at a time in Python
(5–20 µs each, more when an EXIF orientation makes it write the EXIF back out), turns a RATIONAL
value into a Python object (~6 µs each), and sets up and reads each strip of an uncompressed TIFF
in Python (~4 µs each): a 24 MB TIFF of 4,000,000 one-row strips took 16 s and 1.3 GB, 65,535
tags 0.3 s an image. `_tiff_structure` prices the directories Pillow reads (a TIFF's first page,
and the Exif, GPS and Interop directories it points to) from their entry counts, in at most
MAX_IFD_ENTRIES steps; later pages are never read. Inside a JPEG, the parts Pillow walks in
Python within a segment are counted as well: quantisation tables, Photoshop resource blocks, and
EXIF segments, which it joins one copy at a time.

`decoded_bytes` estimates the peak memory a decode takes from the header alone (size × how PIL
stores the mode), so a 16-bit or float image counts what it really costs, not its pixel count. A
JPEG set to decode at a DCT scale (images.open_image) counts its smaller image, plus what libjpeg
still holds at full size: a progressive (or multi-scan) file's coefficients, 2 bytes a sample for
the whole picture whatever the scale (a 6000×4000 progressive JPEG decoded at 1/8 peaks at 142 MiB,
of which 137 are coefficients).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from PIL import Image, JpegImagePlugin

from vit_core.errors import ImageTooLarge

MAX_JPEG_SEGMENTS = 512  # markers before the scan data (an ICC profile in 64 kB chunks is ≤ 70)
MAX_SKIPPED_BYTES = 1024  # fill and junk bytes between JPEG markers, skipped a byte at a time
MAX_CHUNKS = 4096  # PNG (and WebP) chunks, plus one per 4 kB of file (encoders write 8–64 kB IDATs)
MAX_GIF_BLOCKS = 4096  # extension sub-blocks before the first frame
MAX_RLE_PIXELS = 1_000_000  # Pillow decodes RLE BMPs in Python: ~0.3 s per million pixels
# Directory entries in all the IFDs Pillow reads from one file: cameras write 100–300 over
# IFD0, Exif and GPS. At the bound Pillow spends ~3 ms (~10 ms when it rewrites the EXIF).
MAX_IFD_ENTRIES = 512
# Numbers in those entries that Pillow makes a Python object of each (SHORT, LONG, RATIONAL, …;
# bytes and text stay whole), strip and tile tables aside: real files hold tens to hundreds (a
# 256-colour map is 768). RATIONALs are the dearest: ~13 ms at the bound.
MAX_IFD_VALUES = 2048
# Strips or tiles in a TIFF's first image: Pillow sets up and reads each of an uncompressed file
# in Python (~4 µs; ~35 ms at the bound), libtiff those of a compressed one. A 40 MP picture
# stored a row a strip has 5,000–8,000; writers aim at 8–64 kB strips, a few hundred.
MAX_TIFF_STRIPS = 8192
MAX_EXIF_SEGMENTS = 16  # APP1 EXIF segments, which Pillow joins a copy at a time (files have 1)
MAX_JPEG_TABLES = 32  # quantisation tables before the scan (at most 4 in use; files have 1–4)
MAX_PHOTOSHOP_BLOCKS = 1024  # APP13 image resources, a Python step each (Photoshop writes 20–60)
_PNG = b"\x89PNG\r\n\x1a\n"
_TIFF = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # byte order, then 42 (or 43: BigTIFF)
_EXIF = b"Exif\0\0"
_PHOTOSHOP = b"Photoshop 3.0\0"
# TIFF field types Pillow unpacks into a Python object per value (BYTE, ASCII and UNDEFINED
# stay one bytes or str): SHORT, LONG, RATIONAL, SBYTE, SSHORT, SLONG, SRATIONAL, FLOAT, DOUBLE,
# IFD, LONG8, SLONG8, IFD8, by type number → bytes per value.
_NUMBERS = {3: 2, 4: 4, 5: 8, 6: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_UNIT = {1: 1, 2: 1, 7: 1, **_NUMBERS}
_STRIPS = {273, 279, 324, 325}  # StripOffsets, StripByteCounts, TileOffsets, TileByteCounts
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 34665, 34853, 40965  # the directories Pillow follows
_MP_ENTRY = 0xB002  # a multi-picture index's table of images
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_MCU = 32  # pixels: libjpeg pads each band's coefficients to whole MCUs (at most 4×8 samples)


def check_structure(data: bytes) -> None:
    """Refuse (413) a file whose header would take Pillow unbounded Python steps to parse."""
    if data.startswith(b"\xff\xd8"):
        _jpeg(data)
    elif data.startswith(_PNG):
        _png(data)
    elif data.startswith((b"GIF87a", b"GIF89a")):
        _gif(data)
    elif data.startswith(b"BM"):
        _bmp(data)
    elif data.startswith(_TIFF):
        _tiff_structure(data, "the TIFF", _Cost())
    elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        _webp(data)


def decoded_bytes(image: Image.Image) -> int:
    """Peak bytes to decode `image` (opened, not loaded) into the 8-bit RGB the model reads.

    The decoded frame, one more frame-sized copy (EXIF rotation or a mode change), the RGB
    result (PIL stores 3 channels in 4 bytes) and 2 more per pixel for 8-bit intermediates (grey
    from 16-bit), and for transparency the RGBA, its white ground and their composite.
    """
    w, h = image.size
    mode = image.mode
    stored = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    alpha = 12 if mode in _ALPHA_MODES or "transparency" in image.info else 0
    return w * h * (2 * stored + 6 + alpha) + _coefficient_bytes(image)


def dct_scale(image: Image.Image) -> int:
    """s when `image` is a JPEG set (Image.draft) to decode at 1/s, else 1: each decoded pixel
    then stands for s×s of the file's (the last row and column for what is left)."""
    if isinstance(image, JpegImagePlugin.JpegImageFile) and image.decoderconfig:
        return int(image.decoderconfig[0])
    return 1


def _coefficient_bytes(image: Image.Image) -> int:
    """A scaled JPEG's full-size coefficient buffer, counted whether or not the file needs it: a
    sequential file with several scans needs it too, and only the scan data would tell."""
    s = dct_scale(image)
    if s == 1:
        return 0  # a full decode's buffer fits inside the per-pixel estimate above
    padded = [-(-side * s // _MCU) * _MCU for side in image.size]  # the file's size, rounded up
    return 2 * len(image.getbands()) * padded[0] * padded[1]


def _too_costly(what: str) -> ImageTooLarge:
    return ImageTooLarge(f"{what}: refused as too costly to parse")


def _jpeg(data: bytes) -> None:
    """SOI, then marker segments until the scan (SOS); what Pillow walks in Python, and the
    parts of segments it walks too: DQT tables, Photoshop resources, EXIF."""
    i, segments, skipped, n = 2, 0, 0, len(data)
    walked = _Walked()
    while i + 1 < n:
        if data[i] != 0xFF or data[i + 1] == 0xFF:  # junk, or a fill byte before a marker
            i, skipped = i + 1, skipped + 1
            if skipped > MAX_SKIPPED_BYTES:
                raise _too_costly(
                    f"the JPEG has over {MAX_SKIPPED_BYTES} stray bytes in its header"
                )
            continue
        marker, i = data[i + 1], i + 2
        if marker in (0xDA, 0xD9):  # start of scan, end of image: the C decoder takes over
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise _too_costly(f"the JPEG has over {MAX_JPEG_SEGMENTS} header segments")
        length = int.from_bytes(data[i : i + 2], "big")
        if marker in _Walked.MARKERS:
            walked.segment(marker, data[i + 2 : i + length])
        i += length
    walked.price_exif()


class _Walked:
    """What Pillow walks inside a JPEG's segments, counted as the segments go by."""

    MARKERS = frozenset({0xDB, 0xE1, 0xE2, 0xED})  # DQT, APP1 (EXIF), APP2 (MPF), APP13

    def __init__(self) -> None:
        self.tables = self.blocks = 0
        self.exif: list[bytes] = []  # the APP1 EXIF payloads, which Pillow joins
        self.cost = _Cost()

    def segment(self, marker: int, payload: bytes) -> None:
        if marker == 0xDB:
            self._tables(payload)
        elif marker == 0xE1 and payload.startswith(_EXIF):
            self.exif.append(payload if not self.exif else payload[len(_EXIF) :])
            if len(self.exif) > MAX_EXIF_SEGMENTS:
                raise _too_costly(f"the JPEG has over {MAX_EXIF_SEGMENTS} EXIF segments")
        elif marker == 0xE2 and payload.startswith(b"MPF\0"):
            _tiff_structure(payload[4:], "the JPEG's multi-picture index", self.cost)
        elif marker == 0xED and payload.startswith(_PHOTOSHOP):
            self._photoshop(payload)

    def _tables(self, payload: bytes) -> None:
        """DQT: tables of 64 one- or two-byte values, each a slice Pillow copies."""
        at = 0
        while at < len(payload):
            self.tables += 1
            if self.tables > MAX_JPEG_TABLES:
                raise _too_costly(f"the JPEG has over {MAX_JPEG_TABLES} quantisation tables")
            at += 1 + 64 * (1 if payload[at] < 16 else 2)

    def _photoshop(self, payload: bytes) -> None:
        """APP13: "8BIM", code, a padded name, a size, the data (padded), as Pillow reads it."""
        at = len(_PHOTOSHOP)
        while payload[at : at + 4] == b"8BIM" and at + 6 < len(payload):
            self.blocks += 1
            if self.blocks > MAX_PHOTOSHOP_BLOCKS:
                raise _too_costly(
                    f"the JPEG has over {MAX_PHOTOSHOP_BLOCKS} Photoshop resource blocks"
                )
            at += 7 + payload[at + 6]  # "8BIM", code, the name's length byte and the name
            at += at & 1
            at += 4 + int.from_bytes(payload[at : at + 4], "big")
            at += at & 1

    def price_exif(self) -> None:
        if self.exif:
            _tiff_structure(_exif_block(b"".join(self.exif)), "the JPEG's EXIF", self.cost)


def _png(data: bytes) -> None:
    """Length, type, data, CRC: every chunk, IDATs included, is a Python step in Pillow; an
    eXIf chunk's EXIF is priced as a JPEG's is."""
    i, chunks, n = len(_PNG), 0, len(data)
    limit = MAX_CHUNKS + n // 4096
    while i + 8 <= n:
        chunks += 1
        if chunks > limit:
            raise _too_costly(f"the PNG has over {limit:,} chunks")
        kind, size = data[i + 4 : i + 8], int.from_bytes(data[i : i + 4], "big")
        if kind == b"IEND":
            return
        if kind == b"eXIf":
            _tiff_structure(_exif_block(data[i + 8 : i + 8 + size]), "the PNG's EXIF", _Cost())
        i += 12 + size


def _webp(data: bytes) -> None:
    """RIFF chunks (fourcc, little-endian size, data padded to even), walked by libwebp in C;
    an EXIF chunk's EXIF is what Pillow parses in Python."""
    i, chunks, n = 12, 0, len(data)
    limit = MAX_CHUNKS + n // 4096
    while i + 8 <= n:
        chunks += 1
        if chunks > limit:
            raise _too_costly(f"the WebP has over {limit:,} chunks")
        kind, size = data[i : i + 4], int.from_bytes(data[i + 4 : i + 8], "little")
        if kind == b"EXIF":
            _tiff_structure(_exif_block(data[i + 8 : i + 8 + size]), "the WebP's EXIF", _Cost())
        i += 8 + size + (size & 1)


def _gif(data: bytes) -> None:
    """Header, colour table, then extension blocks (each a chain of sub-blocks) until a frame."""
    has_table = len(data) > 10 and data[10] & 0x80
    i = 13 + ((3 << ((data[10] & 7) + 1)) if has_table else 0)  # 3 bytes × 2^(N+1) colours
    blocks, n = 0, len(data)
    while i < n and data[i] == 0x21:  # an extension: introducer, label, then sub-blocks
        i += 2
        while i < n and data[i]:
            blocks += 1
            if blocks > MAX_GIF_BLOCKS:
                raise _too_costly(
                    f"the GIF has over {MAX_GIF_BLOCKS} blocks before its first frame"
                )
            i += 1 + data[i]
        i += 1


def _bmp(data: bytes) -> None:
    """BITMAPINFOHEADER: width, height at 18 and 22; compression 1 or 2 is RLE8 or RLE4."""
    if len(data) < 34:
        return
    width = abs(int.from_bytes(data[18:22], "little", signed=True))
    height = abs(int.from_bytes(data[22:26], "little", signed=True))
    compression = int.from_bytes(data[30:34], "little")
    if compression in (1, 2) and width * height > MAX_RLE_PIXELS:
        raise ImageTooLarge(
            f"the run-length-encoded BMP is {width}×{height}; such BMPs are decoded in Python and "
            f"limited to {MAX_RLE_PIXELS:,} pixels"
        )


def _exif_block(data: bytes) -> bytes:
    """EXIF data without the "Exif\\0\\0" header, which Pillow drops once or twice."""
    for _ in range(2):
        if data.startswith(_EXIF):
            data = data[len(_EXIF) :]
    return data


@dataclass
class _Cost:
    """What the directories of one file read so far will cost Pillow."""

    entries: int = 0
    values: int = 0


def _tiff_structure(data: bytes, what: str, cost: _Cost) -> None:
    """A TIFF structure (a TIFF file, or the EXIF or multi-picture index inside another
    format): the directories Pillow reads, its first and the Exif, GPS and Interop ones that
    points to, priced from their entries (refused past the bounds, 413). Malformed structures
    are left to Pillow, which skips or refuses them itself."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8:
        return
    big = int.from_bytes(data[2:4], "little" if order == "<" else "big") == 43
    if big and len(data) < 16:
        return
    first = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)[0]
    layout = _Layout(data, order, big, what)
    pointers = layout.directory(first, cost)
    for tag in (_EXIF_IFD, _GPS_IFD):
        if tag in pointers:
            inner = layout.directory(pointers[tag], cost)
            if tag == _EXIF_IFD and _INTEROP_IFD in inner:
                layout.directory(inner[_INTEROP_IFD], cost)


@dataclass(frozen=True)
class _Layout:
    data: bytes
    order: str  # "<" or ">"
    big: bool  # BigTIFF: 8-byte counts and offsets
    what: str  # "the TIFF", "the JPEG's EXIF": how a refusal names it

    def directory(self, at: int, cost: _Cost) -> dict[int, int]:
        """Price the IFD at `at` into `cost`; the sub-directory pointers it holds, by tag."""
        data, order, n = self.data, self.order, len(self.data)
        head, width = (8, 20) if self.big else (2, 12)
        if at + head > n:
            return {}
        declared = struct.unpack_from(order + ("Q" if self.big else "H"), data, at)[0]
        entries = min(declared, (n - at - head) // width)  # Pillow stops at the data's end
        cost.entries += entries
        if cost.entries > MAX_IFD_ENTRIES:
            raise _too_costly(f"{self.what} has over {MAX_IFD_ENTRIES:,} directory entries")
        entry = struct.Struct(order + ("HHQ8s" if self.big else "HHI4s"))
        pointers, strips = {}, 0
        for k in range(entries):
            tag, kind, count, value = entry.unpack_from(data, at + head + k * width)
            if count * _UNIT.get(kind, 0) > n:
                continue  # Pillow skips a value larger than the file
            if tag in _STRIPS:
                strips = max(strips, count)
            elif kind in _NUMBERS:
                cost.values += count
            elif tag == _MP_ENTRY:  # 16 bytes an image, each a Python dict in Pillow
                cost.values += count // 16
            if tag in (_EXIF_IFD, _GPS_IFD, _INTEROP_IFD) and kind in (4, 13, 16, 18):
                size = _NUMBERS[kind]
                pointers[tag] = int.from_bytes(value[:size], "little" if order == "<" else "big")
        if strips > MAX_TIFF_STRIPS:
            raise _too_costly(
                f"{self.what} is stored in {strips:,} strips or tiles, over {MAX_TIFF_STRIPS:,}"
            )
        if cost.values > MAX_IFD_VALUES:
            raise _too_costly(
                f"{self.what} holds over {MAX_IFD_VALUES:,} numbers in its directory entries"
            )
        return pointers
