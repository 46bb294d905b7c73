"""Server optimisers (Reddi et al., ICLR 2021, "Adaptive Federated Optimization"): x <- opt(x, g).

g is the aggregated pseudo-gradient a strategy hands over (FedBuff: the staleness-weighted buffer
mean; FedAvg: the round's sample-weighted mean delta). It points *downhill* (it is a delta, not a
gradient), so every rule adds it. With t = steps taken (1-based) and eta_t = lr * schedule(t):

    sgd       x <- x + eta_t * g
    avgm      m <- beta1 * m + g                        x <- x + eta_t * m    (FedAvgM, Hsu 2019)
    adagrad   m <- beta1 * m + (1 - beta1) * g          v <- v + g^2
    adam      m <- (same)                               v <- beta2 * v + (1 - beta2) * g^2
    yogi      m <- (same)                               v <- v - (1 - beta2) * g^2 * sign(v - g^2)
              x <- x + eta_t * m / (sqrt(v) + tau)      (adagrad / adam / yogi; v starts at tau^2)

No bias correction (as in the paper's Algorithm 2). `avgm` with lr 1 is today's FedBuff
`momentum` option, bit for bit. Arithmetic is float32 with float32 scalars, so a replay of the
same g sequence reproduces x, m and v exactly. Pure: no clock, no randomness; the schedule is a
function of the step count, which is part of the state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from server.kernels import fused

__all__ = [
    "LrSchedule",
    "OptimizerName",
    "ScheduleName",
    "ServerOptimizer",
    "make_optimizer",
    "make_schedule",
]


StateDict = dict[str, Any]  # the strategies' checkpointable state (server.strategies.base)


class OptimizerName(StrEnum):
    SGD = "sgd"
    AVGM = "avgm"
    ADAGRAD = "adagrad"
    ADAM = "adam"
    YOGI = "yogi"


_ADAPTIVE = {OptimizerName.ADAGRAD, OptimizerName.ADAM, OptimizerName.YOGI}


class ScheduleName(StrEnum):
    CONSTANT = "constant"
    STEP = "step"  # gamma ** floor((t - 1) / every)
    COSINE = "cosine"  # from 1 down to min_factor over total_steps, then min_factor
    INVERSE_SQRT = "inverse_sqrt"  # 1 / sqrt(1 + (t - 1) / every)


@dataclass(frozen=True)
class LrSchedule:
    """The server learning rate's multiplier at step t (1-based); a linear warm-up in front."""

    name: ScheduleName = ScheduleName.CONSTANT
    warmup_steps: int = 0  # factor t / warmup_steps for t < warmup_steps
    every: int = 100  # step / inverse_sqrt: steps per decay unit
    gamma: float = 0.5  # step: multiplier per `every` steps
    total_steps: int = 1000  # cosine: steps to reach min_factor
    min_factor: float = 0.0  # cosine: the floor

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.every < 1 or self.total_steps < 1:
            raise ValueError("lr_schedule: warmup_steps >= 0, every >= 1, total_steps >= 1")
        if not 0.0 < self.gamma <= 1.0 or not 0.0 <= self.min_factor <= 1.0:
            raise ValueError("lr_schedule: gamma in (0, 1], min_factor in [0, 1]")

    def factor(self, t: int) -> float:
        if t < 1:
            raise ValueError(f"lr_schedule: step must be >= 1, got {t}")
        warm = min(1.0, t / self.warmup_steps) if self.warmup_steps else 1.0
        if self.name is ScheduleName.STEP:
            f = self.gamma ** ((t - 1) // self.every)
        elif self.name is ScheduleName.COSINE:
            progress = min(t, self.total_steps) / self.total_steps
            f = self.min_factor + (1.0 - self.min_factor) * 0.5 * (
                1.0 + math.cos(math.pi * progress)
            )
        elif self.name is ScheduleName.INVERSE_SQRT:
            f = 1.0 / math.sqrt(1.0 + (t - 1) / self.every)
        else:
            f = 1.0
        return warm * f


@dataclass
class ServerOptimizer:
    """One server update rule and its state (step count, first and second moments)."""

    name: OptimizerName = OptimizerName.SGD
    lr: float = 1.0
    beta1: float = 0.9  # avgm: the momentum; adaptive rules: first-moment decay (paper: 0.9)
    beta2: float = 0.99  # adam / yogi second-moment decay (paper: 0.99)
    tau: float = 1e-3  # adaptivity: bounds the per-coordinate step near lr * |m| / tau
    schedule: LrSchedule = field(default_factory=LrSchedule)

    _t: int = field(default=0, init=False, repr=False)
    _m: np.ndarray | None = field(default=None, init=False, repr=False)  # (n,) float32
    _v: np.ndarray | None = field(default=None, init=False, repr=False)  # (n,) float32

    def __post_init__(self) -> None:
        self.name = OptimizerName(self.name)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"server lr must be a finite number > 0, got {self.lr}")
        if not 0.0 <= self.beta1 < 1.0 or not 0.0 <= self.beta2 < 1.0:
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.name is OptimizerName.AVGM and self.beta1 == 0.0:
            raise ValueError("avgm needs beta1 (the momentum) > 0; use sgd for none")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"tau must be > 0, got {self.tau}")

    @property
    def steps(self) -> int:
        return self._t

    def current_lr(self) -> float:
        """The learning rate the next step will use."""
        return self.lr * self.schedule.factor(self._t + 1)

    def step(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        """The new model (a fresh (n,) float32 array); x and g are not modified."""
        eta = np.float32(self.current_lr())
        self._t += 1
        if self.name is OptimizerName.SGD:
            # eta == 1 (the default): x + g has the same bits as x + 1 * g, one pass fewer
            return x + g if eta == 1 else x + eta * g
        if self._m is None:
            self._m = np.zeros_like(g)
        if self.name is OptimizerName.AVGM:
            self._m = np.float32(self.beta1) * self._m + g
            return x + eta * self._m
        b1, b2 = np.float32(self.beta1), np.float32(self.beta2)
        self._m = b1 * self._m + (np.float32(1) - b1) * g
        if self._v is None:
            self._v = np.full_like(g, np.float32(self.tau) ** 2)
        g2 = g * g
        if self.name is OptimizerName.ADAGRAD:
            self._v = self._v + g2
        elif self.name is OptimizerName.ADAM:
            self._v = b2 * self._v + (np.float32(1) - b2) * g2
        else:  # yogi: v moves toward g^2 by at most (1 - beta2) * g^2, never collapses
            self._v = self._v - (np.float32(1) - b2) * g2 * np.sign(self._v - g2)
        denom = np.sqrt(self._v) + np.float32(self.tau)  # (n,) float32, >= tau > 0
        new: np.ndarray = x + eta * self._m / denom
        return new

    def step_from_sum(self, x: np.ndarray, total: np.ndarray, weight: float) -> np.ndarray:
        """The new model for g = total / weight (a buffer's sum and weight), as `step` gives it;
        `total` comes back zeroed, ready to be the next buffer's sum. Plain sgd on a large model
        is one compiled pass (the divide, add and refill were three passes over 4 MB per flush,
        as much as ten top-1% updates cost) with the same float32 operations, so the same bits."""
        if self.name is OptimizerName.SGD and total.size >= fused.KERNEL_MIN_VALUES:
            eta = self.current_lr()
            self._t += 1
            return fused.sgd_step_from_sum(x, total, weight, eta)
        g = np.divide(total, np.float32(weight), out=total)  # (n,) float32, in place
        new = self.step(x, g)  # keeps no reference to g
        total.fill(0.0)
        return new

    def state_dict(self, prefix: str = "opt.") -> StateDict:
        state: StateDict = {prefix + "t": self._t}
        if self._m is not None:
            state[prefix + "m"] = self._m.copy()
        if self._v is not None:
            state[prefix + "v"] = self._v.copy()
        return state

    def load_state_dict(self, state: StateDict, prefix: str = "opt.") -> None:
        t = state.get(prefix + "t", 0)
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"strategy state {prefix}t: expected an int >= 0, got {t!r}")
        self._t = t
        self._m = _array(state, prefix + "m") if prefix + "m" in state else None
        self._v = _array(state, prefix + "v") if prefix + "v" in state else None
        if self._v is not None and self.name not in _ADAPTIVE:
            raise ValueError(f"strategy state {prefix}v: optimizer {self.name} keeps no v")


def _array(state: StateDict, key: str) -> np.ndarray:
    value = state[key]
    if not isinstance(value, np.ndarray) or value.dtype != np.float32 or value.ndim != 1:
        raise ValueError(f"strategy state {key!r}: expected a flat float32 array")
    return value.copy()


_SCHEDULE_KEYS = {"name", "warmup_steps", "every", "gamma", "total_steps", "min_factor"}
_OPTIMIZER_KEYS = {"name", "beta1", "beta2", "tau"}


def make_schedule(spec: Mapping[str, Any] | None) -> LrSchedule:
    """`[strategy.lr_schedule]` -> LrSchedule; ValueError names the bad key."""
    if spec is None:
        return LrSchedule()
    if not isinstance(spec, Mapping):
        raise ValueError("lr_schedule: must be a table")
    extra = sorted(set(spec) - _SCHEDULE_KEYS)
    if extra:
        raise ValueError(f"lr_schedule.{extra[0]}: unknown key (allowed: {sorted(_SCHEDULE_KEYS)})")
    kw = dict(spec)
    try:
        kw["name"] = ScheduleName(kw.get("name", "constant"))
    except ValueError:
        names = [s.value for s in ScheduleName]
        raise ValueError(f"lr_schedule.name: {spec.get('name')!r} not one of {names}") from None
    return LrSchedule(**kw)


def make_optimizer(
    spec: str | Mapping[str, Any] | None,
    *,
    lr: float = 1.0,
    momentum: float = 0.0,
    schedule: Mapping[str, Any] | None = None,
) -> ServerOptimizer:
    """Build from config: `optimizer = "adam"` or a table {name, beta1, beta2, tau}.

    `momentum` is the pre-optimizer FedBuff key, kept working: momentum = b with no optimizer
    named is avgm with beta1 = b (the same arithmetic as before).
    """
    table: dict[str, Any] = {"name": spec} if isinstance(spec, str) else dict(spec or {})
    extra = sorted(set(table) - _OPTIMIZER_KEYS)
    if extra:
        raise ValueError(f"optimizer.{extra[0]}: unknown key (allowed: {sorted(_OPTIMIZER_KEYS)})")
    raw_name = table.pop("name", None)
    if momentum:
        if raw_name not in (None, "avgm") or "beta1" in table:
            raise ValueError(
                "momentum: the legacy shorthand for optimizer 'avgm'; with an optimizer named,"
                " set optimizer.beta1 instead"
            )
        raw_name, table["beta1"] = "avgm", momentum
    try:
        name = OptimizerName(raw_name or "sgd")
    except ValueError:
        names = [o.value for o in OptimizerName]
        raise ValueError(f"optimizer.name: {raw_name!r} not one of {names}") from None
    return ServerOptimizer(name=name, lr=lr, schedule=make_schedule(schedule), **table)
