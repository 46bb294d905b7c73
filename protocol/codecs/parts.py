"""A decoded payload kept in codec form, so the server's arithmetic reads each update once.

`decode_parts` (in `api`) runs every check `decode` runs -- size, structure, index order, scale
sanity, finiteness -- but stops before expanding the payload into a dense float32 vector:

    index   (k,) int64 strictly increasing, < length   (topk)   or None (every element present)
    values  (k,) float32, finite                        (float32, float16 codecs)
    codes   (k,) int8 in [-qmax, qmax]                  (int8, int4 codecs)
    scales  (ceil(k / chunk),) float32, finite, >= 0    (with codes; qmax * scale is finite, so
                                                         every code * scale is finite)

`dense()` is exactly what `decode` returns (it is how `decode` is implemented), bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from protocol.codecs.quantized import dequantize

__all__ = ["DecodedParts"]

F32 = npt.NDArray[np.float32]
I8 = npt.NDArray[np.int8]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class DecodedParts:
    length: int  # n, the dense vector's length
    index: I64 | None  # (k,) kept positions; None = dense (k = n)
    values: F32 | None  # (k,) float32 when the value codec is a float codec
    codes: I8 | None  # (k,) int8 when the value codec is quantised
    scales: F32 | None  # (ceil(k / chunk),) float32 per-chunk scales beside `codes`
    chunk: int = 0  # elements per scale (quantised only)

    @property
    def kept(self) -> int:
        """k: how many elements the payload carries."""
        return self.length if self.index is None else int(self.index.size)

    def kept_values(self) -> F32:
        """(k,) float32: the carried values, dequantised if need be (a new array)."""
        if self.values is not None:
            return self.values
        assert self.codes is not None and self.scales is not None
        return dequantize(self.codes, self.scales, self.chunk)

    def dense(self) -> F32:
        """(n,) float32, exactly what `codecs.decode` returns for the same payload."""
        kept = self.kept_values()
        if self.index is None:
            return kept
        out = np.zeros(self.length, dtype=np.float32)  # (n,)
        if self.index.size:
            out[self.index] = kept
        return out
