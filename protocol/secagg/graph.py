"""SecAgg+ neighbourhoods: with whom each member agrees masks and shares its secrets.

degree 0 (or >= n - 1) is the complete graph of SecAgg (Bonawitz et al. 2017). Otherwise the
members sit on a ring in an order drawn from the cohort seed and each is joined to degree/2
members on each side (a Harary graph, as in SecAgg+, Bell et al. 2020): each device then does
O(degree) agreements, shares and mask expansions instead of O(n). Every member is in its own
neighbourhood (it holds one share of its own secrets).
"""

from __future__ import annotations

import numpy as np

from protocol.secagg.errors import SecAggError, SecAggReason
from protocol.secagg.prg import derive, expand

__all__ = ["neighbourhoods"]


def neighbourhoods(n: int, degree: int, seed: bytes) -> list[frozenset[int]]:
    """For member index i in 0..n-1, the indices it pairs with (itself included)."""
    if degree == 0 or degree >= n - 1:
        everyone = frozenset(range(n))
        return [everyone] * n
    if degree < 2 or degree % 2:
        raise SecAggError(SecAggReason.BAD_PARAMS, f"degree {degree} must be even and >= 2")
    order = np.argsort(expand(derive(seed, b"ring", str(n).encode()), n, 32), kind="stable")
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    half = degree // 2
    out = []
    for i in range(n):
        p = int(position[i])
        out.append(frozenset(int(order[(p + d) % n]) for d in range(-half, half + 1)))
    return out
