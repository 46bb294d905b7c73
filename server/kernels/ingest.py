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
    "sgd_step_from_sum",
    "sq_norm_codes",
    "sq_norm_values",
    "topk_positions",
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


@_jit
def sgd_step_from_sum(x, total, weight, eta, scaled, out):  # type: ignore[no-untyped-def]
    """out = x + eta * (total / weight) (eta skipped when not scaled), and total zeroed for the
    next buffer, in one pass: the float32 operations of FedBuff's divide + sgd step + refill."""
    for i in range(x.size):
        g = total[i] / weight
        out[i] = x[i] + (eta * g if scaled else g)
        total[i] = np.float32(0.0)


# topk_positions' status codes (0 = accepted); server/kernels/fused.py maps them to refusal reasons.
INDEX_OK, INDEX_TRUNCATED, INDEX_COUNT, INDEX_LONG, INDEX_OVERLONG, INDEX_DUPLICATE = range(6)
INDEX_GAP_RANGE, INDEX_RANGE = 6, 7


@_jit
def topk_positions(buf, count, n, out):  # type: ignore[no-untyped-def]
    """Decode `count` LEB128 gaps filling all of `buf` (uint8) into positions out (count,) int64,
    refusing exactly what protocol/codecs (varint.py, topk.py) refuses; returns a status code."""
    size = buf.size
    if size == 0:
        return INDEX_OK if count == 0 else INDEX_TRUNCATED
    if buf[size - 1] & 0x80:
        return INDEX_TRUNCATED
    i = 0
    j = 0
    pos = np.int64(0)
    while i < size:
        if j == count:
            return INDEX_COUNT
        start = i
        gap = np.int64(0)
        shift = 0
        byte = buf[i]
        while True:
            byte = buf[i]
            i += 1
            gap |= np.int64(byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if i - start == 5:  # a 6th byte would follow: longer than any legal varint
                return INDEX_LONG
        if i - start > 1 and byte == 0:
            return INDEX_OVERLONG
        if j > 0 and gap == 0:
            return INDEX_DUPLICATE
        if gap >= n:
            return INDEX_GAP_RANGE
        pos = gap if j == 0 else pos + gap
        if pos >= n:
            return INDEX_RANGE
        out[j] = pos
        j += 1
    return INDEX_OK if j == count else INDEX_COUNT
