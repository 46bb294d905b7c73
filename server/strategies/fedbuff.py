"""FedBuff (Nguyen et al. 2022): buffer K staleness-weighted deltas, then take one server step.

    buffer:   S = sum_i s(tau_i) * w_i * delta_i      (float32 accumulator, (n,))
              W = sum_i w_i                            w_i = num_samples if sample_weighted else 1
    after K:  g = S / W
              x <- opt(x, g);     version += 1;   S, W reset
              (opt: server/optimizers.py, sgd | avgm | adam | yogi | adagrad, with an lr schedule;
               `server_lr` and `momentum` alone give sgd or avgm: x <- x + lr * (m <- beta*m + g))

With `privacy` (server/privacy), each delta is clipped to C on the way in and the flush adds
Gaussian noise to S before dividing by W (refused once the budget is spent).

tau is measured when the update arrives. The buffer is a plain partial sum (S, W, count), which
is what a sharded deployment ships from each shard to the coordinator (DESIGN.md, Scale).

With `robust` options (server/robust) the buffer keeps one row s(tau_i) * delta_i per update
instead, and g is their coordinate-wise trimmed mean or median (rows weigh equally: a device
states its own sample count, so robust aggregation ignores it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from server.admitted import AdmittedUpdate, Contribution
from server.optimizers import ServerOptimizer, make_optimizer
from server.privacy import DpMechanism
from server.robust import Defence, RobustConfig
from server.staleness import StalenessFn, constant
from server.strategies.base import (
    StateDict,
    StepResult,
    Strategy,
    as_array,
    load_privacy_state,
)
from server.strategies.defended import Defended

__all__ = ["FedBuff"]


@dataclass
class FedBuff(Defended, Strategy):
    buffer_size: int = 10  # K; the paper finds K=10 a good default
    server_lr: float = 1.0  # shorthand for optimizer=None: sgd (or avgm) at this lr
    momentum: float = 0.0  # shorthand: avgm with beta1 = momentum; 0 disables
    staleness: StalenessFn = constant
    sample_weighted: bool = False
    fedprox_mu: float = 0.0
    robust: RobustConfig | None = None  # None: plain FedBuff
    privacy: DpMechanism | None = None  # user-level DP: clip in apply, noise in flush
    optimizer: ServerOptimizer | None = None  # the server step; None: from server_lr/momentum
    _opt: ServerOptimizer = field(init=False, repr=False)

    _sum: np.ndarray | None = field(default=None, init=False, repr=False)  # (n,) float32
    # the last buffer's (n,) float32 array, zeroed by its flush for the next one: a fresh 4 MB
    # array per flush cost more than the top-1% updates that filled it (page faults on first touch)
    _spare: np.ndarray | None = field(default=None, init=False, repr=False)
    _weight: float = field(default=0.0, init=False, repr=False)
    _count: int = field(default=0, init=False, repr=False)
    _defence: Defence | None = field(default=None, init=False, repr=False)

    name = "fedbuff"

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {self.buffer_size}")
        if not self.server_lr > 0:
            raise ValueError(f"server_lr must be > 0, got {self.server_lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.optimizer is None:
            self._opt = make_optimizer(None, lr=self.server_lr, momentum=self.momentum)
        elif self.momentum or self.server_lr != 1.0:
            raise ValueError("set the optimizer's lr and beta1, not server_lr/momentum, with it")
        else:
            self._opt = self.optimizer
        if self.robust is not None:
            self._defence = Defence(self.robust, keeps_rows=True)
            if self._defence.keeps_rows and self.sample_weighted:
                raise ValueError("sample_weighted cannot be combined with a robust aggregator")
        if self.privacy is not None and self.sample_weighted:
            raise ValueError(
                "privacy: sample_weighted weights a delta by its sample count (> 1), which "
                "breaks the sensitivity bound C of the noised sum; set sample_weighted = false"
            )
        self._refuse_rows_with_privacy(self.privacy)

    def check(self, version: int, base_version: int) -> None:
        if self.privacy is not None:
            self.privacy.check_open()

    @property
    def server_optimizer(self) -> ServerOptimizer:
        return self._opt

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
        s_tau = self.staleness(tau)
        d = self._defence
        dense: np.ndarray | None = None  # (n,) float32 when DP needs the whole vector
        if self.privacy is not None:
            # DP: clip to C after decoding; s(tau) <= 1 keeps each device's sensitivity at C.
            # A cohort adds its members' sum and counts them all in the weight.
            if s_tau * w > 1.0:
                raise ValueError(f"privacy: update weight {s_tau * w} > 1 breaks the DP bound")
            admitted = update.admitted()
            dense, members = self.privacy.admit(admitted.delta, update.device_id, admitted.members)
            w = float(members)
        if d is not None:  # robust options record the norm (and may keep the whole vector)
            norm = update.norm() if dense is None else float(np.linalg.norm(dense))
            d.accept(update.device_id, norm)
            if d.keeps_rows:  # (never with privacy) the row s(tau) * delta, written in place
                n, weight = model.shape[0], np.float32(s_tau)
                sparse = update.sparse(weight)  # a top-k delta stays sparse
                if sparse is None:
                    update.add_into(d.new_row(n, s_tau), weight)
                else:
                    d.add_sparse_row(n, *sparse, weight=s_tau)
        if d is None or not d.keeps_rows:
            if self._sum is None:
                self._sum = self._fresh_sum(model.shape[0])
            # float32 throughout: a float64 buffer made the mixed-type add 3 ms per 1M-param
            # update, half of all ingest time; K <= ~100 float32 adds lose nothing a model notices.
            # In place: a codec-form delta is added straight from its codes (server/ingest.py)
            if dense is None:
                update.add_into(self._sum, np.float32(s_tau * w))
            else:  # DP: w counts devices, each already in `dense` with weight 1
                self._sum += dense * np.float32(s_tau)
        self._weight += w
        self._count += 1
        if self._count >= self.buffer_size:
            return self.flush(model, version)
        return StepResult(model, version, stepped=False)

    def flush(self, model: np.ndarray, version: int) -> StepResult:
        if self._count == 0:
            return StepResult(model, version, stepped=False)
        total = self._sum
        new = self._reduce_and_step(self._opt, model, total, self._weight, version, self.privacy)
        if total is not None and self.privacy is None:
            self._spare = total  # zeroed by the optimiser's step for the next buffer
        self._end_buffer()
        if new is None:  # the privacy budget refuses this flush: drop the buffer, keep the model
            return StepResult(model, version, stepped=False)
        return StepResult(new, version + 1, stepped=True)

    def _end_buffer(self) -> None:
        self._sum, self._weight, self._count = None, 0.0, 0

    def _fresh_sum(self, n: int) -> np.ndarray:
        """A zeroed (n,) float32 buffer: the last flush's, or a new one."""
        spare, self._spare = self._spare, None
        return spare if spare is not None and spare.shape == (n,) else np.zeros(n, np.float32)

    def state_dict(self) -> StateDict:
        state: StateDict = {"weight": self._weight, "count": self._count}
        if self._sum is not None:
            state["sum"] = self._sum.copy()
        state.update(self.server_optimizer.state_dict())
        if self._defence is not None:
            state.update(self._defence.state_dict())
        if self.privacy is not None:
            state.update(self.privacy.state_dict())
        return state

    def load_state_dict(self, state: StateDict) -> None:
        self._weight = float(state.get("weight", 0.0))
        self._count = int(state.get("count", 0))
        self._sum = as_array(state, "sum", np.float32) if "sum" in state else None
        if "velocity" in state and "opt.m" not in state:  # checkpoints before server optimizers
            state = {**state, "opt.m": state["velocity"]}
        self.server_optimizer.load_state_dict(state)
        if self._defence is not None:
            self._defence.load_state_dict(state)
        load_privacy_state(self.privacy, state)
