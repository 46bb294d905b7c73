"""FedBuff (Nguyen et al. 2022): buffer K staleness-weighted deltas, then take one server step.

    buffer:   S = sum_i s(tau_i) * w_i * delta_i      (float32 accumulator, (n,))
              W = sum_i w_i                            w_i = num_samples if sample_weighted else 1
    after K:  g = S / W
              x <- opt(x, g);     version += 1;   S, W reset
              (opt: server/optimizers.py, sgd | avgm | adam | yogi | adagrad, with an lr schedule;
               `server_lr` and `momentum` alone give sgd or avgm: x <- x + lr * (m <- beta*m + g))

With `privacy` (server/privacy), each delta is clipped to C on the way in and the flush adds
Gaussian noise to S before dividing by W (refused once the budget is spent).

tau is measured when the update arrives. The buffer (server/buffer.py) is a plain partial sum
(S, W, count), which is what a sharded deployment ships from each shard to the coordinator
(DESIGN.md, Scale); the reducer (server/reducer.py) turns it into the step.

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
from server.robust import RobustConfig
from server.staleness import StalenessFn, constant
from server.strategies.base import (
    StateDict,
    StepResult,
    Strategy,
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
        self._set_up_reducer(self.robust, self.privacy, sample_weighted=self.sample_weighted)

    def check(self, version: int, base_version: int) -> None:
        if self.privacy is not None:
            self.privacy.check_open()

    @property
    def server_optimizer(self) -> ServerOptimizer:
        return self._opt

    def apply(self, model: np.ndarray, version: int, update: AdmittedUpdate) -> StepResult:
        return self.apply_contribution(model, version, update)

    def apply_contribution(
        self, model: np.ndarray, version: int, update: Contribution
    ) -> StepResult:
        tau = version - update.base_version
        w = float(update.num_samples) if self.sample_weighted else 1.0
        s_tau = self.staleness(tau)
        buf, d, n = self._buffer, self.defence, model.shape[0]
        dense: np.ndarray | None = None  # (n,) float32 when DP needs the whole vector
        if self.privacy is not None:
            # DP: clip to C after decoding; s(tau) <= 1 keeps each device's sensitivity at C.
            # A cohort adds its members' sum and counts them all in the weight.
            if s_tau * w > 1.0:
                raise ValueError(f"privacy: update weight {s_tau * w} > 1 breaks the DP bound")
            admitted = update.admitted()
            dense, members, within = self.privacy.admit(
                admitted.delta, update.device_id, admitted.members
            )
            buf.counted_clip(members, within)
            w = float(members)
        if d is not None:  # robust options record the norm (the reducer may keep the vector)
            d.record(update.norm() if dense is None else float(np.linalg.norm(dense)))
        if self._reducer.keeps_rows:  # (never with privacy) the row s(tau) * delta, in place
            weight = np.float32(s_tau)
            sparse = update.sparse(weight)  # a top-k delta stays sparse
            if sparse is None:
                update.add_into(buf.rows.new_row(n, s_tau), weight)
            else:
                buf.rows.add_sparse(n, *sparse, weight=s_tau)
        elif dense is None:
            # float32 throughout: a float64 buffer made the mixed-type add 3 ms per 1M-param
            # update, half of all ingest time; K <= ~100 float32 adds lose nothing a model notices.
            # In place: a codec-form delta is added straight from its codes (server/admitted.py)
            update.add_into(buf.sum_for(n), np.float32(s_tau * w))
        else:  # DP: w counts devices, each already in `dense` with weight 1
            total = buf.sum_for(n)
            total += dense * np.float32(s_tau)
        buf.joined(update.device_id, w)
        if buf.count >= self.buffer_size:
            return self.flush(model, version)
        return StepResult(model, version, stepped=False)

    def flush(self, model: np.ndarray, version: int) -> StepResult:
        if self._buffer.count == 0:
            return StepResult(model, version, stepped=False)
        new = self._reducer.step(self._opt, model, self._buffer, version)
        self._buffer.clear()
        if new is None:  # the privacy budget refuses this flush: drop the buffer, keep the model
            return StepResult(model, version, stepped=False)
        return StepResult(new, version + 1, stepped=True)

    def state_dict(self) -> StateDict:
        return self._buffered_state(self._opt)

    def load_state_dict(self, state: StateDict) -> None:
        if "velocity" in state and "opt.m" not in state:  # checkpoints before server optimizers
            state = {**state, "opt.m": state["velocity"]}
        self._load_buffered_state(self._opt, state)
