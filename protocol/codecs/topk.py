"""`topk`: keep the k largest-|x| elements, send their indices and values; the rest decode to 0.

k = round_half_up(fraction * n) clamped to [1, n] (0 when n = 0). k is derived from the spec and
`length`, never sent, so a payload cannot claim a different k.

Layout (no header):

    k LEB128 varints: gap_0 = i_0, gap_j = i_j - i_(j-1) (>= 1)  | values: k elements, value codec

Indices are sorted ascending and delta-coded; the value section's size is exact for its codec,
so the index section is whatever precedes it (between k and 5k bytes, checked before decoding).
Decoding refuses (Reason.CODEC): a zero gap after the first (duplicate index -- and since gaps are
unsigned, a decreasing index cannot be expressed, only attempted through a huge gap), any gap or
index >= length (out of range, which also catches wrap-around attempts), or malformed varints.

Among equal magnitudes at the cut the choice is argpartition's; every dropped |x| is <= every
kept |x|.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.codecs.values import VALUE_CODECS
from protocol.codecs.varint import MAX_VARINT_BYTES, decode_varints, encode_varints
from protocol.errors import ProtocolError, Reason

# (varint section, k, n) -> (k,) strictly increasing positions < n; ProtocolError(CODEC) otherwise
IndexDecoder = Callable[[memoryview, int, int], "npt.NDArray[np.int64]"]

__all__ = ["TopK", "topk_count"]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def topk_count(fraction: float, n: int) -> int:
    """How many elements a topk of `fraction` keeps out of n."""
    if n == 0:
        return 0
    return min(n, max(1, int(np.floor(fraction * n + 0.5))))


class TopK:
    name = "topk"

    @staticmethod
    def size_range(spec: Mapping[str, Any], n: int) -> tuple[int, int]:
        k = topk_count(spec["fraction"], n)
        vals = VALUE_CODECS[spec["values"]["name"]].size(spec["values"], k)
        return vals + k, vals + MAX_VARINT_BYTES * k

    @staticmethod
    def encode(x: F32, spec: Mapping[str, Any]) -> bytes:
        n = x.size
        k = topk_count(spec["fraction"], n)
        if k == 0:
            return b""
        if k == n:
            idx = np.arange(n, dtype=np.int64)
        else:
            idx = np.sort(np.argpartition(np.abs(x), n - k)[n - k :]).astype(np.int64)  # (k,)
        gaps = np.diff(idx, prepend=np.int64(0))  # (k,) gaps[0] = idx[0]
        vals = VALUE_CODECS[spec["values"]["name"]].encode(x[idx], spec["values"])
        return encode_varints(gaps) + vals

    @staticmethod
    def decode_index(
        buf: memoryview, spec: Mapping[str, Any], n: int, decoder: IndexDecoder | None = None
    ) -> tuple[I64, memoryview]:
        """Every index check: (k,) strictly increasing positions < n, and the value section.

        `decoder` (varint bytes, k, n) -> (k,) positions may replace the numpy decoding below
        with a compiled one (the server's); it must accept and refuse exactly the same bytes."""
        k = topk_count(spec["fraction"], n)
        codec = VALUE_CODECS[spec["values"]["name"]]
        split = len(buf) - codec.size(spec["values"], k)
        if decoder is not None:
            return decoder(buf[:split], k, n), buf[split:]
        gaps = decode_varints(buf[:split], k)  # (k,) int64, each < 2**35
        if k == 0:
            return gaps, buf[split:]
        if (gaps[1:] == 0).any():
            raise ProtocolError(Reason.CODEC, "topk indices not strictly increasing (duplicate)")
        if int(gaps.max()) >= n:
            raise ProtocolError(Reason.CODEC, f"topk index gap beyond length {n}")
        idx = np.cumsum(gaps)  # (k,) strictly increasing; <= k * n < 2**62, no overflow
        if int(idx[-1]) >= n:
            raise ProtocolError(Reason.CODEC, f"topk index {int(idx[-1])} out of range [0, {n})")
        return idx, buf[split:]

    @staticmethod
    def decode(buf: memoryview, spec: Mapping[str, Any], n: int) -> F32:
        idx, values = TopK.decode_index(buf, spec, n)
        out = np.zeros(n, dtype=np.float32)  # (n,)
        if idx.size:
            codec = VALUE_CODECS[spec["values"]["name"]]
            out[idx] = codec.decode(values, spec["values"], idx.size)
        return out
