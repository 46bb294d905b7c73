"""Coordinate-wise aggregation of one buffer's rows: mean, trimmed mean, median.

Each row is one update already multiplied by its weight share (staleness, and sample share for
the plain mean), so the plain mean of the rows is exactly FedBuff's `S / W`:

    rows[i] = s(tau_i) * (w_i / mean(w)) * delta_i            (k, n) float32
    mean:          g = mean_i rows[i]
    trimmed mean:  g_j = mean of rows[:, j] without its floor(trim * k) lowest and highest values
    median:        g_j = median_i rows[i, j]
    cosine:        FLTrust (Cao et al. 2021) with the buffer's coordinate-wise median m as the
                   trusted direction instead of a server-side root data set:
                   t_i = max(0, cos(rows[i], m)),
                   g = sum_i t_i * (|m| / |rows[i]|) * rows[i] / sum_i t_i
                   (a row pointing away from the median counts zero; every row is rescaled to the
                   median's norm, so a boosted row weighs no more than an honest one)

Trimming and the median bound what any b < k/2 (median) or b <= floor(trim * k) (trimmed mean)
hostile rows can do to each coordinate: the result stays within the honest rows' range
(Yin et al. 2018). Pure functions, float32, deterministic (np.partition / np.sort are exact).
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

__all__ = ["Aggregator", "aggregate", "trim_count"]


class Aggregator(StrEnum):
    MEAN = "mean"
    TRIMMED_MEAN = "trimmed_mean"
    MEDIAN = "median"
    COSINE = "cosine"


def trim_count(k: int, trim_fraction: float) -> int:
    """Rows cut from each end: floor(trim * k), at most (k - 1) // 2 so one row always remains."""
    return min(int(np.floor(trim_fraction * k)), (k - 1) // 2)


def aggregate(rows: np.ndarray, kind: Aggregator, trim_fraction: float = 0.0) -> np.ndarray:
    """(k, n) float32 rows -> (n,) float32 aggregate."""
    k = rows.shape[0]
    if k == 0:
        raise ValueError("aggregate: no rows")
    if kind is Aggregator.MEAN or k <= 2:
        # with two rows the median and any trimmed mean are the mean
        return _f32(rows.mean(axis=0, dtype=np.float32))
    ordered = np.sort(rows, axis=0)  # (k, n) float32, column-wise (faster than np.median)
    median = (
        ordered[k // 2] if k % 2 else (ordered[k // 2 - 1] + ordered[k // 2]) * np.float32(0.5)
    )  # (n,) float32
    if kind is Aggregator.MEDIAN:
        return _f32(median)
    if kind is Aggregator.COSINE:
        return _cosine_to_reference(rows, median)
    b = trim_count(k, trim_fraction)
    if b == 0:
        return _f32(rows.mean(axis=0, dtype=np.float32))
    return _f32(ordered[b : k - b].mean(axis=0, dtype=np.float32))


def _f32(a: object) -> np.ndarray:
    return np.asarray(a, np.float32)


def _cosine_to_reference(rows: np.ndarray, ref: np.ndarray) -> np.ndarray:
    ref_norm = float(np.linalg.norm(ref))
    norms = np.linalg.norm(rows, axis=1).astype(np.float64)  # (k,)
    if ref_norm == 0.0:
        return _f32(ref)
    cos = (rows @ ref).astype(np.float64) / (np.maximum(norms, 1e-30) * ref_norm)  # (k,)
    trust = np.maximum(cos, 0.0) * (norms > 0)
    total = float(trust.sum())
    if total == 0.0:
        return _f32(ref)  # nothing agrees with the median: step by the median itself
    coef = (trust * ref_norm / np.maximum(norms, 1e-30) / total).astype(np.float32)  # (k,)
    return _f32(coef @ rows)  # (n,)
