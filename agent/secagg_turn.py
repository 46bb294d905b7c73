"""One agent turn while secure aggregation is on (the runtime's hook; see agent/secagg.py).

Kept beside the runtime rather than in it: it runs only when `[secure_aggregation] enabled = true`.
It sees the runtime only through `RoundHost`, the few public things a local round needs, so the
runtime imports this module and this module never imports the runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from agent.secagg import SecureRounds
from agent.state import AgentState, StateMachine
from agent.store import StateStore
from agent.trainer import TrainResult

__all__ = ["RoundHost", "secure_turn"]


class RoundHost(Protocol):
    """What a secure turn needs from the agent: its round, its store, its state machine."""

    store: StateStore
    machine: StateMachine
    clock: Callable[[], float]

    def eligible(self) -> bool:
        """Reads the device's conditions now: may it train?"""
        ...

    def train_local(self, base: np.ndarray, version: int, offer_mu: float) -> TrainResult | None:
        """One local round from `base`; None when it stopped early and is discarded."""
        ...

    def offer_mu(self) -> float:
        """The FedProx mu the current offer asks for (0 when none)."""
        ...

    def local_samples(self) -> int:
        """How many training samples this device holds."""
        ...

    def count_delivered(self) -> None:
        """One more update the server applied (for logs and reports)."""
        ...

    def count_round(self, seconds: float) -> None:
        """One more committed round, and its wall time."""
        ...


def secure_turn(secure: SecureRounds, host: RoundHost) -> bool:
    """The secure-aggregation part of a turn; True while a cohort holds the device."""
    outcome = secure.poll()
    if outcome is not None and outcome.applied and outcome.residual is not None:
        host.store.record_secure_round(outcome.base_version, outcome.residual, host.clock())
        host.count_delivered()
    if not secure.in_cohort:
        return False
    todo = secure.training_base()
    if todo is not None and host.eligible():
        version, base = todo
        host.machine.to(AgentState.TRAINING, f"cohort on v{version}")
        t0 = time.perf_counter()
        result = host.train_local(base, version, host.offer_mu())
        if result is None:
            secure.give_up("stopped early")
            return False
        delta = (result.weights - base).astype(np.float32)  # (n_params,) float32
        corrected = delta + host.store.residual()  # error feedback: what cohorts left out before
        secure.submit(corrected, max(1, min(result.samples, host.local_samples())))
        host.count_round(time.perf_counter() - t0)
        host.machine.to(AgentState.UPLOADING, "masked update in the cohort")
    return True
