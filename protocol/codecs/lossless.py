"""The lossless stage on top of any codec: `none` or `zlib` (RFC 1950 stream, level 6).

Decompression is bounded: the caller passes the largest inner payload the spec and `length`
allow, and anything that would inflate beyond it (a decompression bomb) is refused before it is
produced. A stream that is corrupt, incomplete or followed by trailing bytes is refused too.
All refusals are Reason.CODEC.
"""

from __future__ import annotations

import zlib

from protocol.errors import ProtocolError, Reason

__all__ = ["ZLIB_LEVEL", "compress", "decompress"]

ZLIB_LEVEL = 6  # zlib's default; levels 1..9 all decode the same


def compress(payload: bytes, stage: str) -> bytes:
    return zlib.compress(payload, ZLIB_LEVEL) if stage == "zlib" else payload


def decompress(data: bytes | memoryview, stage: str, max_size: int) -> bytes | memoryview:
    """Undo `compress`, producing at most `max_size` bytes."""
    if stage != "zlib":
        return data
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_size + 1)  # +1: tells "exactly max" from "more"
    except zlib.error as exc:
        raise ProtocolError(Reason.CODEC, f"zlib stream corrupt: {exc}") from exc
    if len(out) > max_size or inflater.unconsumed_tail:
        raise ProtocolError(Reason.CODEC, f"zlib stream inflates beyond {max_size} bytes")
    if not inflater.eof:
        raise ProtocolError(Reason.CODEC, "zlib stream truncated")
    if inflater.unused_data:
        raise ProtocolError(Reason.CODEC, "trailing bytes after the zlib stream")
    return out
