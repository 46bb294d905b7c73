"""Vectorised LEB128 varints for non-negative integers below 2**35 (at most 5 bytes each).

Each value is written 7 bits at a time, least significant group first; every byte but the last
has its high bit set. Decoding is strict, so one sequence of values has one encoding: the
sequence must end on a terminating byte, no varint is longer than 5 bytes, and a multi-byte
varint may not end in a zero group (no over-long encodings). Refusals are Reason.CODEC.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from protocol.errors import ProtocolError, Reason

__all__ = ["MAX_VARINT_BYTES", "decode_varints", "encode_varints"]

MAX_VARINT_BYTES = 5

I64 = npt.NDArray[np.int64]


def encode_varints(values: I64) -> bytes:
    """(k,) int64 in [0, 2**35) -> bytes."""
    v = values.astype(np.int64, copy=False)
    if v.size and (int(v.min()) < 0 or int(v.max()) >= 1 << (7 * MAX_VARINT_BYTES)):
        raise ValueError("varint value out of range")
    nbytes = np.ones(v.size, dtype=np.int64)  # (k,) bytes per value, 1..5
    for j in range(1, MAX_VARINT_BYTES):
        nbytes += v >= (1 << (7 * j))
    ends = np.cumsum(nbytes)  # (k,) one past each value's last byte
    starts = ends - nbytes
    out = np.zeros(int(ends[-1]) if v.size else 0, dtype=np.uint8)
    for j in range(MAX_VARINT_BYTES):  # loop over byte positions, not elements
        has = nbytes > j
        group = (v[has] >> (7 * j)) & 0x7F
        more = (nbytes[has] > j + 1).astype(np.int64) << 7
        out[starts[has] + j] = (group | more).astype(np.uint8)
    return out.tobytes()


def decode_varints(buf: memoryview, count: int) -> I64:
    """Exactly `count` varints filling all of `buf` -> (count,) int64. ProtocolError(CODEC)."""
    b = np.frombuffer(buf, dtype=np.uint8)  # (L,)
    if b.size == 0 and count == 0:
        return np.zeros(0, dtype=np.int64)
    if b.size == 0 or b[-1] & 0x80:
        raise ProtocolError(Reason.CODEC, "varint section truncated")
    ends = np.flatnonzero(b < 0x80)  # (k,) index of each terminating byte
    if ends.size != count:
        raise ProtocolError(Reason.CODEC, f"expected {count} varints, found {ends.size}")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1  # (k,)
    if int(lengths.max()) > MAX_VARINT_BYTES:
        raise ProtocolError(Reason.CODEC, f"varint longer than {MAX_VARINT_BYTES} bytes")
    if ((lengths > 1) & (b[ends] == 0)).any():
        raise ProtocolError(Reason.CODEC, "over-long varint encoding")
    out = b[starts].astype(np.int64) & 0x7F  # (k,) every varint has a first byte
    for j in range(1, int(lengths.max())):  # only as many passes as the longest varint needs
        has = lengths > j
        out[has] |= (b[starts[has] + j].astype(np.int64) & 0x7F) << (7 * j)
    return out
