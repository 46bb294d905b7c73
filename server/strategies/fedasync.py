"""FedAsync (Xie et al. 2019): apply every admitted update on arrival.

    x <- x + alpha * s(tau) * w_n * delta         tau = version - base_version
    w_n = min(1, num_samples / reference_samples)  if sample_weighted else 1

Every update is one server step, so the version advances on each apply. Of the robust options
(server/robust) only the adaptive norm bound applies: there is no buffer to trim or take a median
over, and one update per device per buffer is one per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from server.admitted import AdmittedUpdate
from server.robust import RobustConfig
from server.staleness import StalenessFn, constant
from server.strategies.base import StateDict, StepResult, Strategy
from server.strategies.defended import Defended

__all__ = ["FedAsync", "fedasync_weight"]


def fedasync_weight(
    alpha: float, s_tau: float, num_samples: int, reference_samples: int | None
) -> float:
    """The scalar multiplying a delta: alpha * s(tau) * (sample factor, capped at 1)."""
    factor = 1.0 if reference_samples is None else min(1.0, num_samples / reference_samples)
    return alpha * s_tau * factor


@dataclass
class FedAsync(Defended, Strategy):
    buffered: ClassVar[bool] = False  # each update applies on arrival: no buffer to limit
    alpha: float = 0.6  # mixing rate; the paper's experiments use 0.5-0.9
    staleness: StalenessFn = constant
    reference_samples: int | None = None  # None: no sample weighting
    fedprox_mu: float = 0.0
    robust: RobustConfig | None = None  # the adaptive norm bound only; None: off

    name = "fedasync"

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.reference_samples is not None and self.reference_samples <= 0:
            raise ValueError("reference_samples must be > 0")
        self._set_up_reducer(self.robust, None)  # no buffer: nothing to reduce but norms

    def apply(self, model: np.ndarray, version: int, update: AdmittedUpdate) -> StepResult:
        tau = version - update.base_version
        w = fedasync_weight(
            self.alpha, self.staleness(tau), update.num_samples, self.reference_samples
        )
        if self.defence is not None:
            self.defence.record(update.norm())
        new = model + np.float32(w) * update.delta  # (n,) float32
        return StepResult(new, version + 1, stepped=True)

    def state_dict(self) -> StateDict:
        # stateless between updates, but for the adaptive norm bound's window
        return {} if self.defence is None else self.defence.state_dict()

    def load_state_dict(self, state: StateDict) -> None:
        if self.defence is not None:
            self.defence.load_state_dict(state)
