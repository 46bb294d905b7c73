"""Coordinate-wise aggregation of one buffer's rows: mean, trimmed mean, median.

Each row is one update already multiplied by its weight share (staleness, and sample share for
the plain mean), so the plain mean of the rows is exactly FedBuff's `S / W`:

    rows[i] = s(tau_i) * (w_i / mean(w)) * delta_i            (k, n) float32
    mean:          g = mean_i rows[i]
    trimmed mean:  g_j = mean of rows[:, j] without its floor(trim * k) lowest and highest values
    median:        g_j = median_i rows[i, j]

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
        return rows.mean(axis=0, dtype=np.float32)
    if kind is Aggregator.MEDIAN:
        return np.median(rows, axis=0).astype(np.float32, copy=False)
    b = trim_count(k, trim_fraction)
    if b == 0:
        return rows.mean(axis=0, dtype=np.float32)
    ordered = np.sort(rows, axis=0)  # (k, n) float32, column-wise
    return ordered[b : k - b].mean(axis=0, dtype=np.float32)
