"""L2 clipping shared by devices and the server (differential privacy's sensitivity bound).

    clip_l2(v, C) = v * min(1, C / ||v||)

The norm is taken in float64 and the factor shaved by 2**-20 when it clips, so the float32 result
never exceeds C after rounding: the privacy guarantee rests on ||clipped|| <= C holding exactly.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["clip_l2", "l2_norm"]

_SHAVE = 1.0 - 2.0**-20  # float32 rounding of v * s can add ~1e-7 relative to the norm


def l2_norm(vec: np.ndarray) -> float:
    """||vec||_2 accumulated in float64 (a float32 sum of 1M squares drifts)."""
    v = np.asarray(vec, dtype=np.float64).ravel()
    return math.sqrt(float(np.dot(v, v)))


def clip_l2(vec: np.ndarray, bound: float) -> tuple[np.ndarray, bool]:
    """(n,) float32 -> (clipped (n,) float32, whether it was clipped). `vec` is not modified."""
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"clip bound must be a positive finite number, got {bound}")
    norm = l2_norm(vec)
    if norm <= bound:
        return vec, False
    clipped = (vec * np.float32(bound / norm * _SHAVE)).astype(np.float32)  # (n,) float32
    return clipped, True
