"""Compiled loops for the coordinate-wise aggregators on large models (numba).

`np.sort(rows, axis=0)` on a (10, 1M) float32 buffer takes ~49 ms here: numpy copies every column
out and sorts 10 values a million times. These kernels run one fixed sorting network (Batcher's
odd-even merge sort for k inputs) over tiles of columns at once; every comparator is a min/max
across the tile, which LLVM vectorises. A column's values are only permuted, so the order
statistics are exactly the values `np.sort` gives (a tie between -0.0 and +0.0 may come out
with either sign: only the sign of a zero can differ). Rows are finite (admission checked them).

    column_median(rows, net)            ordered[k//2], or (ordered[k//2 - 1] + ordered[k//2]) * 0.5
    column_trimmed_mean(rows, net, b)   (ordered[b] + ... + ordered[k-b-1]) / (k - 2b), summed in
                                        row order as numpy's mean over axis 0 does
    row_stats(rows, ref, sq, dot)       sq[i] = |rows[i]|^2, dot[i] = rows[i] . ref, in float64
    column_median_stats(rows, net, sq, dot) -> (median, |median|^2): the median and row_stats
                                        against it in one pass over the rows (cosine's needs)
    weighted_row_sum(rows, coef, out)   out = coef[0] * rows[0] + coef[1] * rows[1] + ..., float32,
                                        in row order (BLAS's gemv spun its threads on a busy
                                        2-core machine: 7 ms where this takes 0.3)
    scale_by_agreement(rows, voters, floor, full, dense, g)   server/robust/agreement.py's rule:
                                        g scaled in place by the voting rows' sign agreement

No fastmath where a result is a value of the model: the float32 arithmetic matches the numpy
expressions it replaces operation for operation (tests/unit/server/test_robust_kernels.py).
`row_stats` may reassociate (`reassoc`, so it vectorises): its sums only weigh rows, in float64.
"""

from __future__ import annotations

from functools import cache

import numba
import numpy as np

__all__ = [
    "column_median",
    "column_median_stats",
    "column_trimmed_mean",
    "row_stats",
    "scale_by_agreement",
    "sorting_network",
    "weighted_row_sum",
]

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")
_TILE = 256  # columns per tile: k rows of 256 float32 stay in L1 for k <= 32


@cache
def sorting_network(k: int) -> np.ndarray:
    """(m, 2) int64 comparators (i < j) that sort any k values: Batcher's odd-even merge sort
    for arbitrary k (Knuth, TAOCP 5.3.4); O(k log^2 k) comparators, 31 for k = 10."""
    if k < 1:
        raise ValueError(f"sorting_network: k must be >= 1, got {k}")
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < k:
        step = p
        while step >= 1:
            for j in range(step % p, k - step, 2 * step):
                for i in range(min(step, k - j - step)):
                    if (i + j) // (2 * p) == (i + j + step) // (2 * p):
                        pairs.append((i + j, i + j + step))
            step //= 2
        p *= 2
    net = np.array(pairs, np.int64).reshape(-1, 2)
    net.flags.writeable = False
    return net


@_jit
def _sorted_tile(rows, start, width, tile, net):  # type: ignore[no-untyped-def]
    """Copy columns start:start+width of rows (k, n) into tile (k, _TILE) and sort each one."""
    for r in range(rows.shape[0]):
        tile[r, :width] = rows[r, start : start + width]
    for c in range(net.shape[0]):
        p = net[c, 0]
        q = net[c, 1]
        for j in range(width):  # min/max on one 2-d array: LLVM vectorises this (a view per
            x = tile[p, j]  # row did not: 27 ms against 11 ms for (10, 1M))
            y = tile[q, j]
            tile[p, j] = min(x, y)
            tile[q, j] = max(x, y)


@_jit
def _median_pass(rows, net, sq, dot, stats):  # type: ignore[no-untyped-def]
    """The column medians (n,) float32, and with `stats` the rows' stats against them
    (sq, dot (k,) float64) and |median|^2, each tile's read while it is in cache."""
    k, n = rows.shape
    out = np.empty(n, np.float32)
    tile = np.empty((k, _TILE), np.float32)
    half = np.float32(0.5)
    med_sq = np.zeros(1)
    for start in range(0, n, _TILE):
        width = min(_TILE, n - start)
        _sorted_tile(rows, start, width, tile, net)
        hi = tile[k // 2]
        if k % 2:
            out[start : start + width] = hi[:width]
        else:
            lo = tile[k // 2 - 1]
            for j in range(width):
                out[start + j] = (lo[j] + hi[j]) * half
        if stats:
            _tile_stats(rows[:, start : start + width], out[start : start + width], sq, dot, med_sq)
    return out, med_sq[0]


@_jit
def column_median(rows, net):  # type: ignore[no-untyped-def]
    """(k, n) float32 -> (n,) float32 coordinate-wise median (see the module docstring)."""
    unused = np.empty(0)
    return _median_pass(rows, net, unused, unused, False)[0]


@_jit
def column_median_stats(rows, net, sq, dot):  # type: ignore[no-untyped-def]
    """column_median, plus sq[i] = |rows[i]|^2 and dot[i] = rows[i] . median (float64, (k,));
    returns (median, |median|^2)."""
    sq[:] = 0.0
    dot[:] = 0.0
    return _median_pass(rows, net, sq, dot, True)


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc"})
def _tile_stats(block, med, sq, dot, med_sq):  # type: ignore[no-untyped-def]
    """Add one tile's share of row_stats (block (k, w) float32 against med (w,)) and |med|^2."""
    for i in range(block.shape[0]):
        s = 0.0
        d = 0.0
        for j in range(med.size):
            v = np.float64(block[i, j])
            s += v * v
            d += v * np.float64(med[j])
        sq[i] += s
        dot[i] += d
    m = 0.0
    for j in range(med.size):
        v = np.float64(med[j])
        m += v * v
    med_sq[0] += m


@_jit
def column_trimmed_mean(rows, net, b):  # type: ignore[no-untyped-def]
    """(k, n) float32 -> (n,) float32: the mean of each column without its b lowest and b
    highest values (0 <= b and 2b < k)."""
    k, n = rows.shape
    out = np.empty(n, np.float32)
    tile = np.empty((k, _TILE), np.float32)
    count = np.float32(k - 2 * b)
    for start in range(0, n, _TILE):
        width = min(_TILE, n - start)
        _sorted_tile(rows, start, width, tile, net)
        for j in range(width):
            acc = tile[b, j]
            for r in range(b + 1, k - b):
                acc = acc + tile[r, j]
            out[start + j] = acc / count
    return out


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc"})
def row_stats(rows, ref, sq, dot):  # type: ignore[no-untyped-def]
    """One pass over (k, n) float32 rows: sq[i] = sum rows[i]^2, dot[i] = sum rows[i] * ref,
    float64 accumulators (k,)."""
    k, n = rows.shape
    for i in range(k):
        row = rows[i]
        s = 0.0
        d = 0.0
        for j in range(n):
            v = np.float64(row[j])
            s += v * v
            d += v * np.float64(ref[j])
        sq[i] = s
        dot[i] = d


@_jit
def weighted_row_sum(rows, coef, out):  # type: ignore[no-untyped-def]
    """out (n,) float32 = sum_i coef[i] * rows[i], accumulated row after row."""
    k, n = rows.shape
    for j in range(n):
        out[j] = np.float32(0.0)
    for i in range(k):
        c = coef[i]
        row = rows[i]
        for j in range(n):
            out[j] = out[j] + c * row[j]


@_jit
def scale_by_agreement(rows, voters, floor, full, dense, g):  # type: ignore[no-untyped-def]
    """g (n,) float32 *= clip((|#pos - #neg| / k - floor) / (full - floor), 0, 1) per column over
    the voting rows (k = voters.sum()); nothing when under `dense` of their values are non-zero.
    Returns whether it scaled (server/robust/agreement.py)."""
    n = rows.shape[1]
    balance = np.zeros(n, np.int64)
    k = 0
    nonzero = 0
    for i in range(rows.shape[0]):
        if not voters[i]:
            continue
        k += 1
        row = rows[i]
        for j in range(n):
            v = row[j]
            balance[j] += (v > 0) - (v < 0)
            nonzero += v != 0
    if nonzero < dense * (k * n):
        return False
    width = full - floor
    for j in range(n):
        s = (abs(balance[j]) / k - floor) / width
        s = min(max(s, 0.0), 1.0)
        g[j] = g[j] * np.float32(s)
    return True
