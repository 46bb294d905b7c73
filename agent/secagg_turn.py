"""One agent turn while secure aggregation is on (the runtime's hook; see agent/secagg.py).

Kept beside the runtime rather than in it: it reads the runtime's trainer, store and state
machine, and runs only when `[secure_aggregation] enabled = true`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from agent.state import AgentState

if TYPE_CHECKING:
    from agent.runtime import AgentRuntime

__all__ = ["secure_turn"]


def secure_turn(rt: AgentRuntime) -> bool:
    """The secure-aggregation part of a turn; True while a cohort holds the device."""
    secure = rt.secure
    assert secure is not None
    outcome = secure.poll()
    if outcome is not None and outcome.applied and outcome.residual is not None:
        rt.store.record_secure_round(outcome.base_version, outcome.residual, rt.clock())
        rt.acked += 1
    if not secure.in_cohort:
        return False
    todo = secure.training_base()
    if todo is not None and rt._read_decision().eligible:
        version, base = todo
        rt.machine.to(AgentState.TRAINING, f"cohort on v{version}")
        t0 = time.perf_counter()
        mu = rt.offer.fedprox_mu if rt.offer is not None else 0.0
        result = rt._train_from(base, version, mu)
        if result.stopped_early and not rt._keep_partial(result):
            secure.give_up("stopped early")
            return False
        delta = (result.weights - base).astype(np.float32)  # (n_params,) float32
        corrected = delta + rt.store.residual()  # error feedback: what cohorts left out before
        secure.submit(corrected, max(1, min(result.samples, len(rt.train_y))))
        rt.round_seconds.append(time.perf_counter() - t0)
        rt.machine.to(AgentState.UPLOADING, "masked update in the cohort")
    return True
