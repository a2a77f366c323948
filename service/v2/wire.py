"""The Open Inference Protocol's bytes on the wire: a body's JSON header and binary tail, its
compression, and BYTES tensors in the binary tensor data extension's encoding.

    body = JSON header ‖ tensor 0's bytes ‖ tensor 1's bytes ‖ …
           (Inference-Header-Content-Length: the JSON's length; absent: the body is all JSON)
    BYTES tensor = for each element: its length as uint32 little-endian ‖ its bytes
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Sequence

from vit_core.errors import (
    InvalidParameter,
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    excerpt,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
_LENGTH = struct.Struct("<I")
# zlib's wbits: 16 + 15 reads a gzip stream, 15 a zlib one (HTTP's "deflate" is zlib-wrapped).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# A compressed body is inflated this many bytes at a time, each step's output counted against
# the request-bytes budget before the next is made: a 33 kB body that inflates to 32 MB is
# refused (429) at its share of the budget, not after the 32 MB exist. Large enough that the
# steps (a hop to the event loop each) cost nothing beside the inflating.
INFLATE_STEP = 1 << 20
# ASCII digits only (str.isdigit() also takes "²" and other scripts' digits, which int()
# refuses), and few enough that int() is cheap and no body is that long.
_DIGITS = re.compile(r"[0-9]{1,15}", re.ASCII)

Take = Callable[[int], None]  # counts bytes against the request-bytes budget; raises when full


def decompress(
    body: bytes, encoding: str, limit: int, take: Take | None = None
) -> bytes | bytearray:
    """A Content-Encoding gzip or deflate body, inflated to at most `limit` bytes, INFLATE_STEP
    at a time: each step's bytes are `take`n before the next step is made, so what a body
    becomes counts against the request-bytes budget as it is made (the compressed bytes were
    counted as they arrived); without `take`, nothing is counted. Run it off the event loop:
    zlib releases the GIL while it works."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return body
    if name not in _WBITS:
        raise UnsupportedMediaType(
            f"Content-Encoding {excerpt(name)} is not supported; send gzip, deflate or none"
        )
    too_large = PayloadTooLarge(f"the body inflates past the limit of {limit:,} bytes")
    inflater, out, pending = zlib.decompressobj(_WBITS[name]), bytearray(), body
    try:
        while not inflater.eof:
            step = inflater.decompress(pending, min(INFLATE_STEP, limit + 1 - len(out)))
            pending = inflater.unconsumed_tail
            if len(out) + len(step) > limit:
                raise too_large
            if take is not None:
                take(len(step))
            out += step
            if not step and not pending:  # the input is spent before the stream's end
                break
    except zlib.error as e:
        raise InvalidParameter(f"the body is not valid {name} data") from e
    if not inflater.eof:
        raise InvalidParameter(f"the {name} body is truncated")
    if inflater.unused_data:
        raise InvalidParameter(
            f"the body has {len(inflater.unused_data):,} bytes after the end of its {name} data"
        )
    return out  # not bytes(out): a second copy of up to max_body_bytes that nothing counts


def split_body(
    body: bytes | bytearray, header_length: str | None
) -> tuple[bytes | bytearray, memoryview]:
    """(the JSON header, the binary tail) as Inference-Header-Content-Length divides them; the
    tail is a view of `body`, not a copy. A length that is not one, or runs past the body, is
    framing the service will not guess at (400), as a bad Content-Length would be."""
    if header_length is None:
        return body, memoryview(b"")
    given = header_length.strip()
    if not _DIGITS.fullmatch(given) or int(given) > len(body):
        raise MalformedRequest(
            f"{HEADER_LENGTH} is {excerpt(header_length)!r}; it must be the JSON's length in "
            f"bytes (ASCII digits), at most the body's {len(body):,}"
        )
    n = int(given)
    return body[:n], memoryview(body)[n:]


def unpack_bytes(data: bytes | memoryview, count: int, name: str) -> list[bytes]:
    """`count` length-prefixed elements that fill `data` exactly."""
    items, offset = [], 0
    for i in range(count):
        if offset + _LENGTH.size > len(data):
            raise InvalidParameter(
                f"{excerpt(name)}: the binary data ends before element {i}'s length"
            )
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + size > len(data):
            raise InvalidParameter(
                f"{excerpt(name)}: element {i} declares {size:,} bytes past the end"
            )
        items.append(bytes(data[offset : offset + size]))
        offset += size
    if offset != len(data):
        raise InvalidParameter(
            f"{excerpt(name)}: {len(data) - offset:,} bytes left over after its {count} elements"
        )
    return items


def pack_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)
