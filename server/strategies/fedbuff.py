"""FedBuff (Nguyen et al. 2022): buffer K staleness-weighted deltas, then take one server step.

    buffer:   S = sum_i s(tau_i) * w_i * delta_i      (float32 accumulator, (n,))
              W = sum_i w_i                            w_i = num_samples if sample_weighted else 1
    after K:  g = S / W
              m <- beta * m + g   (if momentum beta > 0)   else  m = g
              x <- x + lr * m;    version += 1;   S, W reset

tau is measured when the update arrives. The buffer is a plain partial sum (S, W, count), which
is what a sharded deployment ships from each shard to the coordinator (DESIGN.md, Scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from server.staleness import StalenessFn, constant
from server.strategies.base import (
    AdmittedUpdate,
    Contribution,
    StateDict,
    StepResult,
    Strategy,
    as_array,
)

__all__ = ["FedBuff"]


@dataclass
class FedBuff(Strategy):
    buffer_size: int = 10  # K; the paper finds K=10 a good default
    server_lr: float = 1.0
    momentum: float = 0.0  # server momentum beta; 0 disables
    staleness: StalenessFn = constant
    sample_weighted: bool = False
    fedprox_mu: float = 0.0

    _sum: np.ndarray | None = field(default=None, init=False, repr=False)  # (n,) float32
    _weight: float = field(default=0.0, init=False, repr=False)
    _count: int = field(default=0, init=False, repr=False)
    _velocity: np.ndarray | None = field(default=None, init=False, repr=False)  # (n,) float32

    name = "fedbuff"

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {self.buffer_size}")
        if not self.server_lr > 0:
            raise ValueError(f"server_lr must be > 0, got {self.server_lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    @property
    def pending(self) -> int:
        return self._count

    def apply(self, model: np.ndarray, version: int, update: AdmittedUpdate) -> StepResult:
        return self.apply_contribution(model, version, update)

    def apply_contribution(
        self, model: np.ndarray, version: int, update: Contribution
    ) -> StepResult:
        tau = version - update.base_version
        w = float(update.num_samples) if self.sample_weighted else 1.0
        if self._sum is None:
            self._sum = np.zeros(model.shape[0], np.float32)
        # float32 throughout: a float64 buffer made the mixed-type add 3 ms per 1M-param update,
        # half of all ingest time; K <= ~100 float32 adds lose nothing a model notices.
        # In place: a codec-form delta is added straight from its codes (server/ingest.py)
        update.add_into(self._sum, np.float32(self.staleness(tau) * w))
        self._weight += w
        self._count += 1
        if self._count >= self.buffer_size:
            return self.flush(model, version)
        return StepResult(model, version, stepped=False)

    def flush(self, model: np.ndarray, version: int) -> StepResult:
        if self._count == 0 or self._sum is None:
            return StepResult(model, version, stepped=False)
        g = self._sum / np.float32(self._weight)  # (n,) float32; _weight >= 1 as count > 0
        if self.momentum > 0.0:
            if self._velocity is None:
                self._velocity = np.zeros_like(g)
            self._velocity = np.float32(self.momentum) * self._velocity + g
            g = self._velocity
        new = model + np.float32(self.server_lr) * g  # (n,) float32
        self._sum, self._weight, self._count = None, 0.0, 0
        return StepResult(new, version + 1, stepped=True)

    def state_dict(self) -> StateDict:
        state: StateDict = {"weight": self._weight, "count": self._count}
        if self._sum is not None:
            state["sum"] = self._sum.copy()
        if self._velocity is not None:
            state["velocity"] = self._velocity.copy()
        return state

    def load_state_dict(self, state: StateDict) -> None:
        self._weight = float(state.get("weight", 0.0))
        self._count = int(state.get("count", 0))
        self._sum = as_array(state, "sum", np.float32) if "sum" in state else None
        self._velocity = as_array(state, "velocity", np.float32) if "velocity" in state else None
