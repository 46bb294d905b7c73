"""Coordinate-wise aggregation of one buffer's rows: mean, trimmed mean, median.

Each row is one update already multiplied by its weight share (staleness, and sample share for
the plain mean), so the plain mean of the rows is exactly FedBuff's `S / W`:

    rows[i] = s(tau_i) * (w_i / mean(w)) * delta_i            (k, n) float32
    mean:          g = mean_i rows[i]
    trimmed mean:  g_j = mean of rows[:, j] without its floor(trim * k) lowest and highest values
    median:        g_j = median_i rows[i, j]
    cosine:        rows that agree with the buffer's coordinate-wise median m, each cut to its
                   weight times the median delta length r, counted once (rows[i] = w_i * delta_i,
                   w_i the staleness weight s(tau_i) FedBuff passes; 1 without it):
                   a_i = 1 if rows[i] . m > 0 (cosine > 0) else 0,  r = median_i |rows[i]| / w_i
                   g = sum_i a_i * min(1, w_i * r / |rows[i]|) * rows[i] / sum_i a_i
                   A row pointing away from the median (a sign flip) counts zero, and no delta
                   weighs more than a median-length one (a boosted row is cut to w_i * r); a
                   stale row keeps its staleness discount (a cut at the median row length
                   shortened fresh rows most: fleet.py 4.82x vs 5.40x FedAvg's speed). When m = 0
                   (sparse top-k rows with little overlap) every non-zero row counts: there is no
                   direction to check; when no row agrees, g = m.
                   This replaced FLTrust's weighting (Cao et al. 2021, with m as the trusted
                   direction: t_i = cos(rows[i], m), every row rescaled to |m|). That counted each
                   row by its cosine rather than its length and cut the step to |m| / r of the
                   mean's (0.57x at 30 rows on benchmarks/fleet.py), which cost the 6x
                   over-committed fleet its advantage over FedAvg (5.40x undefended, 3.64x with
                   FLTrust) and skewed fleets the rows of their rarer classes (parity.py: sensor,
                   100 devices, Dirichlet 0.1, 0.55x central); see docs/security.md,
                   "Skewed fleets and the default defence", for the measured comparison.

Trimming and the median bound what any b < k/2 (median) or b <= floor(trim * k) (trimmed mean)
hostile rows can do to each coordinate: the result stays within the honest rows' range
(Yin et al. 2018). Pure functions, float32, deterministic (sorting is exact). From 32,768
columns the order statistics and the rows' norms come from compiled kernels
(server/kernels/robust.py: the same values, ~5x faster than np.sort on (10, 1M) rows).
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from types import ModuleType

import numpy as np

from server.kernels import KERNEL_MIN_VALUES
from server.robust.agreement import scale_by_agreement

__all__ = [
    "COSINE_ROW_CLIP",
    "Aggregator",
    "aggregate",
    "row_stats",
    "trim_count",
    "warm_up",
    "weighted_row_sum",
]

# columns from which the kernels run (a module global so tests can move it)
_KERNEL_MIN_COLUMNS = KERNEL_MIN_VALUES


# cosine: an agreeing row is cut at this multiple of its weight times the median delta length (a
# boosted row weighs no more than that; chosen on benchmarks/robustness.py, fleet.py, parity.py)
COSINE_ROW_CLIP = 1.0


class Aggregator(StrEnum):
    MEAN = "mean"
    TRIMMED_MEAN = "trimmed_mean"
    MEDIAN = "median"
    COSINE = "cosine"


def trim_count(k: int, trim_fraction: float) -> int:
    """Rows cut from each end: floor(trim * k), at most (k - 1) // 2 so one row always remains."""
    return min(int(np.floor(trim_fraction * k)), (k - 1) // 2)


def aggregate(
    rows: np.ndarray,
    kind: Aggregator,
    trim_fraction: float = 0.0,
    weights: np.ndarray | None = None,
    *,
    sign_agreement: bool = False,
) -> np.ndarray:
    """(k, n) float32 rows -> (n,) float32 aggregate. `weights`, (k,) > 0: the weight each row
    already carries (FedBuff: s(tau)); the cosine aggregate cuts a row at its weight times the
    median unweighted norm (None: all 1). `sign_agreement`: then scale each coordinate by how
    far the rows the aggregate kept agree on its sign (server/robust/agreement.py)."""
    k = rows.shape[0]
    if k == 0:
        raise ValueError("aggregate: no rows")
    if weights is not None and weights.shape != (k,):
        raise ValueError(f"aggregate: {weights.shape} weights for {k} rows")
    voters = np.ones(k, bool)  # (k,): the rows the aggregate kept
    if kind is Aggregator.COSINE and k > 2:
        g, voters = _cosine_to_median(rows, np.ones(k) if weights is None else weights)
    else:
        g = _coordinate_wise(rows, kind, trim_fraction)
    if sign_agreement:
        scale_by_agreement(g, rows, voters)
    return g


def _coordinate_wise(rows: np.ndarray, kind: Aggregator, trim_fraction: float) -> np.ndarray:
    k = rows.shape[0]
    if kind is Aggregator.MEAN or k <= 2:
        # with two rows the median, any trimmed mean and the cosine filter are the mean
        return _f32(rows.mean(axis=0, dtype=np.float32))
    if kind is Aggregator.TRIMMED_MEAN:
        b = trim_count(k, trim_fraction)
        if b == 0:
            return _f32(rows.mean(axis=0, dtype=np.float32))
        if _kernel_sized(rows):
            k_ = _kernels()
            return _f32(k_.column_trimmed_mean(rows, k_.sorting_network(k), b))
        return _f32(np.sort(rows, axis=0)[b : k - b].mean(axis=0, dtype=np.float32))
    return _median(rows)  # (n,) float32


def row_stats(rows: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k, n) float32 rows, (n,) float32 ref -> (|rows[i]|^2, rows[i] . ref), (k,) float64 each."""
    k = rows.shape[0]
    if _kernel_sized(rows):
        sq, dot = np.empty(k), np.empty(k)
        _kernels().row_stats(rows, ref, sq, dot)
        return sq, dot
    r = rows.astype(np.float64)  # (k, n): small here
    return np.einsum("ij,ij->i", r, r), r @ ref.astype(np.float64)


def warm_up(num_columns: int) -> None:
    """Load (or compile, first run after install) the kernels at start-up when rows of this
    length will use them, so the first flush does not pay for it (as server/ingest.warm_up)."""
    if num_columns < _KERNEL_MIN_COLUMNS:
        return
    k_ = _kernels()
    rows = np.ones((3, 4), np.float32)  # (k, n)
    k_.column_median(rows, k_.sorting_network(3))
    k_.column_median_stats(rows, k_.sorting_network(3), np.empty(3), np.empty(3))
    k_.column_trimmed_mean(rows, k_.sorting_network(3), 1)
    k_.row_stats(rows, rows[0], np.empty(3), np.empty(3))
    k_.weighted_row_sum(rows, np.ones(3, np.float32), np.empty(4, np.float32))


def _median(rows: np.ndarray) -> np.ndarray:
    k = rows.shape[0]
    if _kernel_sized(rows):
        k_ = _kernels()
        return _f32(k_.column_median(rows, k_.sorting_network(k)))
    ordered = np.sort(rows, axis=0)  # (k, n) float32, column-wise (faster than np.median)
    if k % 2:
        return _f32(ordered[k // 2])
    return _f32((ordered[k // 2 - 1] + ordered[k // 2]) * np.float32(0.5))


def _kernel_sized(rows: np.ndarray) -> bool:
    return bool(rows.shape[1] >= _KERNEL_MIN_COLUMNS and rows.flags.c_contiguous)


@cache
def _kernels() -> ModuleType:
    from server.kernels import robust as kernels

    return kernels


def _f32(a: object) -> np.ndarray:
    return np.asarray(a, np.float32)


def _cosine_to_median(rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cosine aggregate (n,) float32 and which rows it kept, (k,) bool."""
    k = rows.shape[0]
    if _kernel_sized(rows):  # one pass: the median and the rows' stats against it
        k_ = _kernels()
        sq, dot = np.empty(k), np.empty(k)  # (k,) float64: |rows[i]|^2, rows[i] . m
        ref, ref_sq = k_.column_median_stats(rows, k_.sorting_network(k), sq, dot)
    else:
        ref = _median(rows)
        sq, dot = row_stats(rows, ref)
        ref_sq = float(row_stats(ref[None, :], ref)[0][0])
    norms = np.sqrt(sq)  # (k,) float64
    # m = 0: no coordinate has a majority (sparse rows with little overlap), nothing to check
    agree = (norms > 0) & (dot > 0) if ref_sq > 0.0 else norms > 0  # (k,) bool
    count = int(agree.sum())
    if count == 0:  # nothing agrees with the median: step by the median itself
        return _f32(ref).copy(), np.ones(k, bool)
    # rows are w_i * delta_i: the cut is on the deltas' lengths, so a stale (shorter) row is not
    # lengthened and a fresh one is not cut more than its delta's length calls for
    w = np.maximum(weights, 1e-30)  # (k,)
    bound = COSINE_ROW_CLIP * float(np.median(norms / w)) * w  # (k,)
    clip = np.minimum(1.0, bound / np.maximum(norms, 1e-30))  # (k,)
    coef = (agree * clip / count).astype(np.float32)
    return weighted_row_sum(rows, coef), agree  # (n,), (k,)


def weighted_row_sum(rows: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """(k, n) float32 rows, (k,) float32 coef -> sum_i coef[i] * rows[i], (n,) float32, summed
    row after row (the same bits on either path, and on any BLAS or thread count)."""
    out = np.zeros(rows.shape[1], np.float32)
    if _kernel_sized(rows):
        _kernels().weighted_row_sum(rows, coef, out)
        return out
    for c, row in zip(coef, rows, strict=True):
        out += c * row
    return out
