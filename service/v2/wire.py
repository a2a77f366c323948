"""The Open Inference Protocol's bytes on the wire: a body's JSON header and binary tail, its
compression, and BYTES tensors in the binary tensor data extension's encoding.

    body = JSON header ‖ tensor 0's bytes ‖ tensor 1's bytes ‖ …
           (Inference-Header-Content-Length: the JSON's length; absent: the body is all JSON)
    BYTES tensor = for each element: its length as uint32 little-endian ‖ its bytes
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from vit_core.errors import InvalidParameter, PayloadTooLarge, UnsupportedMediaType

HEADER_LENGTH = "Inference-Header-Content-Length"
_LENGTH = struct.Struct("<I")
# zlib's wbits: 16 + 15 reads a gzip stream, 15 a zlib one (HTTP's "deflate" is zlib-wrapped).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A Content-Encoding gzip or deflate body, inflated to at most `limit` bytes: a small
    compressed body cannot make the service hold more than an uncompressed one could."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in _WBITS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding} is not supported; send gzip, deflate or none"
        )
    inflater = zlib.decompressobj(_WBITS[encoding])
    try:
        data = inflater.decompress(body, limit)
        if inflater.unconsumed_tail:
            raise PayloadTooLarge(f"the body inflates past the limit of {limit:,} bytes")
        data += inflater.flush()
    except zlib.error as e:
        raise InvalidParameter(f"the body is not valid {encoding} data") from e
    if len(data) > limit:
        raise PayloadTooLarge(f"the body inflates past the limit of {limit:,} bytes")
    if not inflater.eof:
        raise InvalidParameter(f"the {encoding} body is truncated")
    return data


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(the JSON header, the binary tail) as Inference-Header-Content-Length divides them."""
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise InvalidParameter(
            f"{HEADER_LENGTH} is {header_length!r}; it must be the JSON's length in bytes, "
            f"at most the body's {len(body):,}"
        )
    n = int(header_length)
    return body[:n], body[n:]


def unpack_bytes(data: bytes, count: int, name: str) -> list[bytes]:
    """`count` length-prefixed elements that fill `data` exactly."""
    items, offset = [], 0
    for i in range(count):
        if offset + _LENGTH.size > len(data):
            raise InvalidParameter(f"{name}: the binary data ends before element {i}'s length")
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + size > len(data):
            raise InvalidParameter(f"{name}: element {i} declares {size:,} bytes past the end")
        items.append(data[offset : offset + size])
        offset += size
    if offset != len(data):
        raise InvalidParameter(
            f"{name}: {len(data) - offset:,} bytes left over after its {count} elements"
        )
    return items


def pack_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)
