"""What an encoded image will cost, known before it is decoded, and refused (413) when too much.

Pillow parses some headers in Python, one step per marker, chunk, block or run: a JPEG of a
million empty APP markers (or megabytes of junk between markers), a PNG of a million tiny chunks,
a GIF of a million empty extension sub-blocks, or an RLE-compressed BMP (a pure-Python decoder, a
step per pixel) cost seconds to minutes of CPU from a few kB. `check_structure` walks those
headers itself in a bounded number of steps and refuses before Pillow starts. Real files are far
inside the bounds: a JPEG has 5–30 segments before its scan, a PNG a few chunks plus one IDAT
per 8–64 kB, a GIF a handful of extension blocks.

`decoded_bytes` estimates the peak memory a decode takes from the header alone (size × how PIL
stores the mode), so a 16-bit or float image counts what it really costs, not its pixel count. A
JPEG set to decode at a DCT scale (images.open_image) counts its smaller image, plus what libjpeg
still holds at full size: a progressive (or multi-scan) file's coefficients, 2 bytes a sample for
the whole picture whatever the scale (a 6000×4000 progressive JPEG decoded at 1/8 peaks at 142 MiB,
of which 137 are coefficients).
"""

from __future__ import annotations

from PIL import Image, JpegImagePlugin

from vit_core.errors import ImageTooLarge

MAX_JPEG_SEGMENTS = 512  # markers before the scan data (an ICC profile in 64 kB chunks is ≤ 70)
MAX_SKIPPED_BYTES = 1024  # fill and junk bytes between JPEG markers, skipped a byte at a time
MAX_CHUNKS = 4096  # PNG chunks, plus one per 4 kB of file (encoders write 8–64 kB IDATs)
MAX_GIF_BLOCKS = 4096  # extension sub-blocks before the first frame
MAX_RLE_PIXELS = 1_000_000  # Pillow decodes RLE BMPs in Python: ~0.3 s per million pixels
_PNG = b"\x89PNG\r\n\x1a\n"
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
    """SOI, then marker segments until the scan (SOS); what Pillow walks in Python."""
    i, segments, skipped, n = 2, 0, 0, len(data)
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
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise _too_costly(f"the JPEG has over {MAX_JPEG_SEGMENTS} header segments")
        i += int.from_bytes(data[i : i + 2], "big")


def _png(data: bytes) -> None:
    """Length, type, data, CRC: every chunk, IDATs included, is a Python step in Pillow."""
    i, chunks, n = len(_PNG), 0, len(data)
    limit = MAX_CHUNKS + n // 4096
    while i + 8 <= n:
        chunks += 1
        if chunks > limit:
            raise _too_costly(f"the PNG has over {limit:,} chunks")
        if data[i + 4 : i + 8] == b"IEND":
            return
        i += 12 + int.from_bytes(data[i : i + 4], "big")


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
