"""FedAvg / FedProx (McMahan et al. 2017; Li et al. 2020): the synchronous baseline.

Versions advance in rounds. A round accepts only updates trained on the current version (anything
else is STALE: its round is over), and closes when `round_size` updates arrived, or at the deadline
with at least `min_updates` of them:

    x <- x + sum_i n_i * delta_i / sum_i n_i       (sample-weighted mean, float32)

With `privacy` this is DP-FedAvg (McMahan et al. 2018): deltas clipped to C and weighted equally
(n_i = 1, so the sum's sensitivity is C), Gaussian noise on the sum before dividing by the count.

FedProx is FedAvg plus a proximal term on the devices: `fedprox_mu` travels in the ModelOffer.
The round clock starts at the first `tick` after a round opens; time is passed in, never read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from protocol.errors import Reason, RejectedUpdate
from server.privacy import DpMechanism
from server.strategies.base import (
    AdmittedUpdate,
    StateDict,
    StepResult,
    Strategy,
    as_array,
    load_privacy_state,
)

__all__ = ["FedAvg"]


@dataclass
class FedAvg(Strategy):
    round_size: int = 10  # M: updates that close a round early
    deadline_s: float = 60.0  # a round closes after this long if >= min_updates arrived
    min_updates: int = 1
    fedprox_mu: float = 0.0
    privacy: DpMechanism | None = None  # DP-FedAvg: clip in apply, noise in flush

    _sum: np.ndarray | None = field(default=None, init=False, repr=False)  # (n,) float32
    _samples: int = field(default=0, init=False, repr=False)
    _count: int = field(default=0, init=False, repr=False)
    _round_started: float | None = field(default=None, init=False, repr=False)

    name = "fedavg"

    def __post_init__(self) -> None:
        if self.round_size < 1 or not 1 <= self.min_updates <= self.round_size:
            raise ValueError("need round_size >= 1 and 1 <= min_updates <= round_size")
        if not self.deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0, got {self.deadline_s}")
        if self.fedprox_mu < 0:
            raise ValueError(f"fedprox_mu must be >= 0, got {self.fedprox_mu}")

    @property
    def pending(self) -> int:
        return self._count

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
        if self._sum is None:
            self._sum = np.zeros(model.shape[0], np.float32)
        delta, n = update.delta, update.num_samples
        if self.privacy is not None:  # DP: clipped, equal weights (a count would exceed 1)
            delta, n = self.privacy.clip(delta, update.device_id), 1
        # float32 like FedBuff (same arithmetic, so the two agree bit for bit where they should)
        self._sum += delta * np.float32(n)
        self._samples += n
        self._count += 1
        if self._count >= self.round_size:
            return self.flush(model, version)
        return StepResult(model, version, stepped=False)

    def tick(self, model: np.ndarray, version: int, now: float) -> StepResult:
        if self._round_started is None:
            self._round_started = now
            return StepResult(model, version, stepped=False)
        if now - self._round_started >= self.deadline_s and self._count >= self.min_updates:
            return self.flush(model, version)
        return StepResult(model, version, stepped=False)

    def flush(self, model: np.ndarray, version: int) -> StepResult:
        if self._count == 0 or self._sum is None:
            return StepResult(model, version, stepped=False)
        total = self._sum
        if self.privacy is not None:
            noised = self.privacy.release(self._sum, version)  # S + noise, before dividing
            if noised is None:  # the budget refuses this round: drop it, keep the model
                self._sum, self._samples, self._count, self._round_started = None, 0, 0, None
                return StepResult(model, version, stepped=False)
            total = noised
        mean = total / np.float32(self._samples)  # (n,) float32; _samples > 0
        new = model + mean  # (n,) float32
        self._sum, self._samples, self._count, self._round_started = None, 0, 0, None
        return StepResult(new, version + 1, stepped=True)

    def state_dict(self) -> StateDict:
        # The round clock is not saved: monotonic time does not survive a restart, so a
        # recovered server starts the open round's deadline afresh.
        state: StateDict = {"samples": self._samples, "count": self._count}
        if self._sum is not None:
            state["sum"] = self._sum.copy()
        if self.privacy is not None:
            state.update(self.privacy.state_dict())
        return state

    def load_state_dict(self, state: StateDict) -> None:
        self._samples = int(state.get("samples", 0))
        self._count = int(state.get("count", 0))
        self._round_started = None
        self._sum = as_array(state, "sum", np.float32) if "sum" in state else None
        load_privacy_state(self.privacy, state)
