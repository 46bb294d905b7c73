"""Compiled loops for the fused ingest path (numba): each update's codes are read once or twice
(norm, then accumulate) and the buffer is read-modified-written once, with no (n,) temporaries.

Float semantics match the numpy path they replace, element by element, so a model is bit-identical
whichever path built it (tests/unit/server/test_ingest.py):

    numpy:  d = float32(q) * s[chunk];  d = d * clip (only when clipping);  out += d * w
    here:   out[i] = out[i] + ((float32(q[i]) * s[c]) * clip) * w  (same ops, same order)

No fastmath on the accumulating kernels (it would license FMA contraction and reassociation and
break the bit-identity). The norms may reassociate (`reassoc` only): a norm decides a clip factor,
which is logged, and replay applies the logged factor rather than recomputing it.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "add_codes_dense",
    "add_codes_sparse",
    "add_values_dense",
    "add_values_sparse",
    "sq_norm_codes",
    "sq_norm_values",
]

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")
_INT32_SAFE = 131_072  # 131072 * 127**2 < 2**31: an int32 partial sum of squared codes is exact


@_jit
def sq_norm_codes(codes, scales, chunk):  # type: ignore[no-untyped-def]
    """sum_c scale_c**2 * sum_{i in c} q_i**2 in float64; the code sums are exact integers."""
    n = codes.size
    total = 0.0
    for c in range(scales.size):
        lo = c * chunk
        hi = min(lo + chunk, n)
        acc = np.int64(0)
        for start in range(lo, hi, _INT32_SAFE):
            block = codes[start : min(start + _INT32_SAFE, hi)]
            part = np.int32(0)
            for i in range(block.size):
                v = np.int32(block[i])
                part += v * v
            acc += part
        s = np.float64(scales[c])
        total += s * s * np.float64(acc)
    return total


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc"})
def sq_norm_values(values):  # type: ignore[no-untyped-def]
    total = 0.0
    for i in range(values.size):
        v = np.float64(values[i])
        total += v * v
    return total


@_jit
def add_codes_dense(out, codes, scales, chunk, clip, clipping, weight):  # type: ignore[no-untyped-def]
    """out (n,) float32 += dequantised codes (n,), clipped, weighted."""
    n = codes.size
    for c in range(scales.size):
        s = scales[c]
        lo = c * chunk
        hi = min(lo + chunk, n)
        o = out[lo:hi]
        q = codes[lo:hi]
        if clipping:
            for i in range(hi - lo):
                o[i] = o[i] + ((np.float32(q[i]) * s) * clip) * weight
        else:
            for i in range(hi - lo):
                o[i] = o[i] + (np.float32(q[i]) * s) * weight


@_jit
def add_codes_sparse(out, index, codes, scales, chunk, clip, clipping, weight):  # type: ignore[no-untyped-def]
    """out[index[j]] += dequantised codes[j], clipped, weighted (index strictly increasing)."""
    k = codes.size
    for c in range(scales.size):  # chunk by chunk: no integer division per element
        s = scales[c]
        for j in range(c * chunk, min(c * chunk + chunk, k)):
            d = np.float32(codes[j]) * s
            if clipping:
                d = d * clip
            i = index[j]
            out[i] = out[i] + d * weight


@_jit
def add_values_dense(out, values, clip, clipping, weight):  # type: ignore[no-untyped-def]
    if clipping:
        for i in range(values.size):
            out[i] = out[i] + (values[i] * clip) * weight
    else:
        for i in range(values.size):
            out[i] = out[i] + values[i] * weight


@_jit
def add_values_sparse(out, index, values, clip, clipping, weight):  # type: ignore[no-untyped-def]
    for j in range(values.size):
        d = values[j]
        if clipping:
            d = d * clip
        k = index[j]
        out[k] = out[k] + d * weight
