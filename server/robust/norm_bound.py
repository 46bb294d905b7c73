"""Adaptive L2 norm bound: a multiple of the running median norm of accepted updates.

A fixed `max_norm` must be set for the worst honest update (the probe's deployment used 100 while
honest updates moved the model by ~0.006), so it stops nothing. This bound follows the fleet:

    bound = multiplier * median(norms of the last `window` accepted updates)

and applies once `warmup` updates were accepted (before that only the fixed bound applies). An
update above it is clipped to it, or refused with Reason.NORM. The norms recorded are those of
the deltas as accepted (after any clip), so a hostile minority cannot ratchet the median up: it
moves only if more than half the window is hostile. A zero delta (a device whose data the model
already fits: its softmax gradient vanishes) is accepted but not recorded: it says nothing about
how long an update is, and a window of mostly zeros made the bound 0, which refused every later
update (parity.py, wine, 8 devices, Dirichlet 0.1, seed 2: 55 updates accepted in two hours).

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

__all__ = ["AdaptiveNormBound", "BoundAction"]


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

    def __post_init__(self) -> None:
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1.0):
            raise ValueError(f"norm_multiplier must be a finite number >= 1, got {self.multiplier}")
        if self.window < 1 or not 1 <= self.warmup <= self.window:
            raise ValueError("need norm_window >= 1 and 1 <= norm_warmup <= norm_window")
        self._norms = deque(maxlen=self.window)

    @property
    def bound(self) -> float | None:
        """The bound now, or None while warming up."""
        if len(self._norms) < self.warmup:
            return None
        return self.multiplier * float(np.median(np.fromiter(self._norms, np.float64)))

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
