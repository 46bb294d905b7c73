"""Sign agreement: a coordinate of the buffer's aggregate moves only as far as its rows agree.

A backdoor lives in coordinates the honest fleet barely moves (a trigger's pixels, the weights
from them to the target class): the honest rows' signs there are mixed, the hostile rows' are
one. Any mean, however its rows are filtered and cut, adds the hostile push there on every flush,
and nothing the honest data does undoes it, so a small share of devices teaches the trigger
given enough flushes. Here each coordinate j of the aggregate g is scaled by how many of the
voting rows push it the same way (the robust learning rate of Ozdayi et al. 2021, softened):

    a_j = |#(rows[i, j] > 0) - #(rows[i, j] < 0)| / k        over the k voting rows
    g_j <- g_j * clip((a_j - FLOOR) / (FULL - FLOOR), 0, 1)

With k = 10 and (FLOOR, FULL) = (0.4, 1.0): 7 against 3 or closer stops the coordinate, 8 against 2
moves it a third, 9 against 1 two thirds, 10 against 0 fully. A zero value votes for neither
side, so a coordinate that only one device moves does not move. Chosen on benchmarks/robustness.py
over five seeds (docs/security.md has the rows): a 10% backdoor's success 0.23-0.62 -> 0.015-0.045;
a gentler ramp (FULL 0.8) cost clean accuracy less (0.4 points against 0.9 on average) but let
the backdoor reach 0.07 on two seeds. A device that alone holds a class looks the same as a
backdoor here: strongly skewed fleets pay for the rule (parity_sign_agreement.json: 17 of 20
rows at 0.95x central against 20 of 20), and so does speed (fleet.py: 3.9x FedAvg's against
6.0x), which is why it is off unless `[strategy.robust] sign_agreement = true`.

Sparse rows (top-k) are left alone: when fewer than half of the voting rows' values are non-zero
there is no majority to ask (`DENSE_SHARE`), and the rule would stop learning altogether. A
buffer of one or two rows has nothing to vote on. Float64 for the ratios, float32 for the scaled
aggregate, on either path (numpy below the kernel size, numba above it): the same bits.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType

import numpy as np

from server.kernels import KERNEL_MIN_VALUES

__all__ = ["DENSE_SHARE", "FLOOR", "FULL", "scale_by_agreement"]

FLOOR = 0.4  # agreement at or below which a coordinate does not move
FULL = 1.0  # agreement from which it moves fully (every voting row the same sign)
DENSE_SHARE = 0.5  # the voting rows' share of non-zero values from which the rule applies

_KERNEL_MIN_COLUMNS = KERNEL_MIN_VALUES  # a module global so tests can move it


def scale_by_agreement(g: np.ndarray, rows: np.ndarray, voters: np.ndarray) -> bool:
    """Scale g (n,) float32 in place by its rows' sign agreement; rows (k, n) float32, voters
    (k,) bool: the rows that vote (the ones the aggregate kept). False when the rule did not
    apply (fewer than three voters, or sparse rows) and g is unchanged."""
    k = int(voters.sum())
    if k < 3:
        return False
    if rows.shape[1] >= _KERNEL_MIN_COLUMNS and rows.flags.c_contiguous:
        return bool(_kernels().scale_by_agreement(rows, voters, FLOOR, FULL, DENSE_SHARE, g))
    votes = rows[voters]  # (k, n) float32
    if np.count_nonzero(votes) < DENSE_SHARE * votes.size:
        return False
    balance = (votes > 0).sum(axis=0, dtype=np.int64) - (votes < 0).sum(axis=0, dtype=np.int64)
    share = np.abs(balance) / k  # (n,) float64
    scale = np.clip((share - FLOOR) / (FULL - FLOOR), 0.0, 1.0).astype(np.float32)  # (n,)
    g *= scale
    return True


@cache
def _kernels() -> ModuleType:
    from server.kernels import robust as kernels

    return kernels
