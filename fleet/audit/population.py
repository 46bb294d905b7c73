"""The devices of an audit trial: honest updates and the audit's own directions.

Honest updates are random directions with log-normal norms around the clip norm (about a third
of them are clipped): they are the background a canary must stand out from, as real devices'
updates are. Canary directions are uniform on the unit sphere.
"""

from __future__ import annotations

import numpy as np

__all__ = ["honest_updates", "unit_directions"]

NORM_SPREAD = 0.5  # sigma of log(norm / C): the median honest update sits at the clip norm


def unit_directions(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    """(count, n) float64 rows of unit length, uniform on the sphere."""
    g = rng.standard_normal((count, n))
    rows: np.ndarray = g / np.linalg.norm(g, axis=1, keepdims=True)
    return rows


def honest_updates(rng: np.random.Generator, count: int, n: int, clip: float) -> np.ndarray:
    """(count, n) float32 updates: random directions, norms C * exp(N(0, NORM_SPREAD^2))."""
    norms = clip * np.exp(NORM_SPREAD * rng.standard_normal(count))  # (count,)
    return (unit_directions(rng, count, n) * norms[:, None]).astype(np.float32)
