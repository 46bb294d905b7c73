"""Shared-seed random-k: every cohort member keeps the same k pseudo-random coordinates.

Top-k picks a different support per device, so pairwise masks over different coordinates no
longer cancel. Here the support is a pure function of (seed, n, k) announced with the cohort: the
k coordinates with the smallest ChaCha20 keystream words (ties broken by index, so the set is
exact on every platform). With error feedback on the device, what random-k leaves out is carried
into the next round's delta, so over rounds every coordinate is eventually sent (no 1/q scaling).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from protocol.secagg.prg import derive, expand

__all__ = ["select"]


def select(seed: bytes, n: int, k: int) -> npt.NDArray[np.int64]:
    """Sorted (k,) int64 coordinate indices in [0, n); k >= n keeps everything."""
    if k >= n:
        return np.arange(n, dtype=np.int64)
    words = expand(derive(seed, b"random-k", str(n).encode()), n, 32)  # (n,) uint32
    keys = (words.astype(np.uint64) << np.uint64(32)) | np.arange(n, dtype=np.uint64)
    picked = np.argpartition(keys, k - 1)[:k]  # keys are distinct: the set is unique
    return np.sort(picked).astype(np.int64)
