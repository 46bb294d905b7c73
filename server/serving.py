"""The serving model: an average of recent global versions, for evaluation and devices' inference.

The training iterate x_v (what devices train from) moves with every step and, on small skewed
fleets, swings toward whichever devices reported last. Averaging iterates (Polyak-Ruppert; an
exponential moving average in practice) keeps the progress and cancels most of the swing:

    on each new version v = 1, 2, ...:   d = min(decay, (k - 1) / k)      k = versions seen so far
                                         s <- d * s + (1 - d) * x_v

For the first 1 / (1 - decay) versions that is the exact uniform (Polyak) mean of every version
so far; after that an EMA whose horizon is about 1 / (1 - decay) versions. `decay = 0` serves the
iterate itself. The initial weights (version 0) are never averaged in. float32, no clock, no
randomness: the log replay reproduces s bit for bit, and the state is checkpointed with the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ServingAverage"]


@dataclass
class ServingAverage:
    decay: float = 0.0  # 0: serve the iterate; 0.9: about the last 10 versions

    _avg: np.ndarray | None = field(default=None, init=False, repr=False)  # (n,) float32
    _seen: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.decay) and 0.0 <= self.decay < 1.0):
            raise ValueError(f"serving decay must be in [0, 1), got {self.decay}")

    @property
    def enabled(self) -> bool:
        return self.decay > 0.0

    @property
    def seen(self) -> int:
        """Versions averaged so far."""
        return self._seen

    def observe(self, model: np.ndarray) -> None:
        """Fold in a new global version (call once per version step)."""
        self._seen += 1
        if not self.enabled:
            return
        d = min(self.decay, (self._seen - 1) / self._seen)
        if self._avg is None or d == 0.0:
            self._avg = np.array(model, np.float32, copy=True)
            return
        dd = np.float32(d)
        self._avg = dd * self._avg + (np.float32(1) - dd) * model

    def model(self, iterate: np.ndarray) -> np.ndarray:
        """The serving weights: the average, or `iterate` when disabled or nothing seen yet."""
        return iterate if self._avg is None else self._avg

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"seen": self._seen, "decay": self.decay}
        if self._avg is not None:
            state["avg"] = self._avg.copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        seen = state.get("seen", 0)
        if isinstance(seen, bool) or not isinstance(seen, int) or seen < 0:
            raise ValueError(f"serving state 'seen': expected an int >= 0, got {seen!r}")
        avg = state.get("avg")
        if avg is not None and (
            not isinstance(avg, np.ndarray) or avg.dtype != np.float32 or avg.ndim != 1
        ):
            raise ValueError("serving state 'avg': expected a flat float32 array")
        self._seen = seen
        # A checkpoint written with another decay keeps its average: the new decay applies from
        # the next version on (changing the horizon is a config change, not corruption).
        self._avg = None if avg is None or not self.enabled else avg.copy()
