"""FedAvg / FedProx (McMahan et al. 2017; Li et al. 2020): the synchronous baseline.

Versions advance in rounds. A round accepts only updates trained on the current version (anything
else is STALE: its round is over), and closes when `round_size` updates arrived, or at the deadline
with at least `min_updates` of them:

    g = sum_i n_i * delta_i / sum_i n_i            (sample-weighted mean, float32)
    x <- opt(x, g)                                  (server/optimizers.py; default sgd lr 1: x + g)

With `privacy` this is DP-FedAvg (McMahan et al. 2018): deltas clipped to C and weighted equally
(n_i = 1, so the sum's sensitivity is C), Gaussian noise on the sum before dividing by the count.

FedProx is FedAvg plus a proximal term on the devices: `fedprox_mu` travels in the ModelOffer.
With `robust` options (server/robust) a round keeps one row per update and steps by their
unweighted coordinate-wise trimmed mean or median (a device states its own sample count).
The round clock starts at the first `tick` after a round opens; time is passed in, never read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from protocol.errors import Reason, RejectedUpdate
from server.admitted import AdmittedUpdate
from server.optimizers import ServerOptimizer, make_optimizer
from server.privacy import DpMechanism
from server.robust import RobustConfig
from server.strategies.base import (
    StateDict,
    StepResult,
    Strategy,
)
from server.strategies.defended import Defended

__all__ = ["FedAvg"]


@dataclass
class FedAvg(Defended, Strategy):
    round_size: int = 10  # M: updates that close a round early
    deadline_s: float = 60.0  # a round closes after this long if >= min_updates arrived
    min_updates: int = 1
    fedprox_mu: float = 0.0
    robust: RobustConfig | None = None  # None: plain FedAvg
    privacy: DpMechanism | None = None  # DP-FedAvg: clip in apply, noise in flush
    server_lr: float = 1.0  # shorthand for optimizer=None: sgd at this lr (1: plain FedAvg)
    optimizer: ServerOptimizer | None = None  # FedAvgM / FedAdam / ... on the round mean
    _opt: ServerOptimizer = field(init=False, repr=False)

    _round_started: float | None = field(default=None, init=False, repr=False)

    name = "fedavg"

    def __post_init__(self) -> None:
        if self.round_size < 1 or not 1 <= self.min_updates <= self.round_size:
            raise ValueError("need round_size >= 1 and 1 <= min_updates <= round_size")
        if not self.deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0, got {self.deadline_s}")
        if self.fedprox_mu < 0:
            raise ValueError(f"fedprox_mu must be >= 0, got {self.fedprox_mu}")
        if self.optimizer is None:
            self._opt = make_optimizer(None, lr=self.server_lr)
        elif self.server_lr != 1.0:
            raise ValueError("set the optimizer's lr, not server_lr, with it")
        else:
            self._opt = self.optimizer
        self._set_up_reducer(self.robust, self.privacy)

    @property
    def server_optimizer(self) -> ServerOptimizer:
        return self._opt

    def check(self, version: int, base_version: int) -> None:
        if self.privacy is not None:
            self.privacy.check_open()
        if base_version < version:
            raise RejectedUpdate(
                Reason.STALE, f"round for version {base_version} is closed (now {version})"
            )

    def apply(self, model: np.ndarray, version: int, update: AdmittedUpdate) -> StepResult:
        self.check(version, update.base_version)  # the server checked too; the simulator may not
        if update.num_samples <= 0:
            raise RejectedUpdate(Reason.SAMPLES, "FedAvg needs num_samples > 0")
        delta, n, weight = update.delta, update.num_samples, update.num_samples
        buf = self._buffer
        if self.privacy is not None:  # DP: clipped, equal weights (a count would exceed 1)
            delta, n, within = self.privacy.admit(delta, update.device_id, update.members)
            buf.counted_clip(n, within)
            weight = 1  # `delta` is one device's or a cohort's sum: n devices in it
        if self.defence is not None:
            self.defence.record(float(np.linalg.norm(delta)))
        if self._reducer.keeps_rows:
            np.copyto(buf.rows.new_row(model.shape[0]), delta)
        else:
            # float32 like FedBuff (same arithmetic, so the two agree bit for bit where they should)
            total = buf.sum_for(model.shape[0])
            total += delta * np.float32(weight)
        buf.joined(update.device_id, float(n))  # W: the round's samples
        if buf.count >= self.round_size:
            return self.flush(model, version)
        return StepResult(model, version, stepped=False)

    def tick(self, model: np.ndarray, version: int, now: float) -> StepResult:
        if self._round_started is None:
            self._round_started = now
            return StepResult(model, version, stepped=False)
        if now - self._round_started >= self.deadline_s and self.pending >= self.min_updates:
            return self.flush(model, version)
        return StepResult(model, version, stepped=False)

    def flush(self, model: np.ndarray, version: int) -> StepResult:
        if self._buffer.count == 0:
            return StepResult(model, version, stepped=False)
        new = self._reducer.step(self._opt, model, self._buffer, version)  # sgd lr 1: model + mean
        self._buffer.clear()
        self._round_started = None
        if new is None:  # the privacy budget refuses this round: drop it, keep the model
            return StepResult(model, version, stepped=False)
        return StepResult(new, version + 1, stepped=True)

    def state_dict(self) -> StateDict:
        # The round clock is not saved: monotonic time does not survive a restart, so a
        # recovered server starts the open round's deadline afresh.
        return self._buffered_state(self._opt)  # the buffer's W: the round's samples

    def load_state_dict(self, state: StateDict) -> None:
        self._round_started = None
        self._load_buffered_state(self._opt, state)
