"""Adaptive L2 norm bound: a multiple of the running median norm of accepted updates.

A fixed `max_norm` must be set for the worst honest update (the probe's deployment used 100 while
honest updates moved the model by ~0.006), so it stops nothing. This bound follows the fleet:

    bound = multiplier * median(norms of the last `window` accepted updates)

and applies once `warmup` updates were accepted. Before that, the bound comes from the initial
model (`initial_bound`, set by the strategy's `start_from`): a fresh fleet has taught the server
nothing about honest updates yet, and a bound that only starts after N updates lets the first N
through unclipped (outside probe: ten updates of norm 1e4, sent first, froze the model at loss
15,035). An update above the bound is clipped to it, or refused with Reason.NORM.

The norms recorded are those of the deltas as accepted (after any clip), so a hostile minority
cannot ratchet the median up: it moves only if more than half the window is hostile. A zero delta
(a device whose data the model already fits: its softmax gradient vanishes) is accepted but not
recorded: it says nothing about how long an update is, and a window of mostly zeros made the
bound 0, which refused every later update (parity.py, wine, 8 devices, Dirichlet 0.1, seed 2:
55 updates accepted in two hours).

State is the window of norms (float64), checkpointed with the strategy; replay of the log
reproduces it exactly because the recorded norm is a function of the logged (clipped) delta.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from protocol.errors import Reason, RejectedUpdate

__all__ = ["AdaptiveNormBound", "BoundAction", "initial_bound"]

# Before the fleet has taught the server how long an honest update is, one update may move the
# model by at most this fraction of the initial model's length: what a user expects of "one
# device cannot take over a new fleet", while honest first rounds (which are mostly far shorter:
# 0.006 against a model of length ~8 in the probe's digits deployment) keep their direction and
# at worst their length for the first `warmup` updates. A model that starts at or near zero
# (a linear model) has no length to speak of: its parameters count, as 0.1 RMS each.
INITIAL_FRACTION = 0.1
_RMS_FLOOR = 0.1


def initial_bound(model: np.ndarray, fraction: float = INITIAL_FRACTION) -> float:
    """The warm-up bound for a fleet starting at `model`, (n,) float32: fraction x its L2 norm,
    at least fraction x 0.1 x sqrt(n)."""
    length = math.sqrt(float(np.dot(model.astype(np.float64), model.astype(np.float64))))
    return fraction * max(length, _RMS_FLOOR * math.sqrt(model.shape[0]))


class BoundAction(StrEnum):
    CLIP = "clip"  # scale the delta down to the bound: the device's work still counts
    REJECT = "reject"  # refuse it with Reason.NORM


@dataclass
class AdaptiveNormBound:
    multiplier: float = 3.0
    window: int = 200
    warmup: int = 10
    action: BoundAction = BoundAction.CLIP

    _norms: deque[float] = field(default_factory=deque, init=False, repr=False)
    prior: float | None = field(default=None, init=False)  # the bound while warming up

    def __post_init__(self) -> None:
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1.0):
            raise ValueError(f"norm_multiplier must be a finite number >= 1, got {self.multiplier}")
        if self.window < 1 or not 1 <= self.warmup <= self.window:
            raise ValueError("need norm_window >= 1 and 1 <= norm_warmup <= norm_window")
        self._norms = deque(maxlen=self.window)

    @property
    def median(self) -> float | None:
        """The running median norm, or None while warming up."""
        if len(self._norms) < self.warmup:
            return None
        return float(np.median(np.fromiter(self._norms, np.float64)))

    @property
    def bound(self) -> float | None:
        """The bound now: multiplier x median, the prior while warming up (None: no prior)."""
        median = self.median
        return self.prior if median is None else self.multiplier * median

    def start_from(self, model: np.ndarray) -> None:
        """Derive the warm-up bound from the model the fleet starts at (deterministic: replay
        and a restart derive the same one)."""
        self.prior = initial_bound(model)

    def screen(self, norm: float) -> float:
        """The clip factor for a delta of L2 norm `norm` (1.0 = untouched); raises if refused."""
        if not math.isfinite(norm):
            raise RejectedUpdate(Reason.NORM, f"norm {norm} is not finite")
        bound = self.bound
        if bound is None or norm <= bound:
            return 1.0
        if self.action is BoundAction.REJECT:
            raise RejectedUpdate(
                Reason.NORM,
                f"norm {norm:.4g} > adaptive bound {bound:.4g} "
                f"({self.multiplier:g} x running median)",
            )
        return bound / norm

    def record(self, norm: float) -> None:
        if norm > 0.0:  # only positive norms: the median, and so the bound, stays > 0
            self._norms.append(float(norm))

    def state_dict(self) -> np.ndarray:
        return np.fromiter(self._norms, np.float64, count=len(self._norms))

    def load_state_dict(self, norms: np.ndarray) -> None:
        kept = [float(x) for x in norms if x > 0.0]  # older checkpoints may hold zeros
        self._norms = deque(kept[-self.window :], maxlen=self.window)
