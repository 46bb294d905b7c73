"""The server half of the simulation: production admission + a production strategy object.

No MQTT and no durable log, but the same bytes in (`Admission.admit`), the same maths
(`Strategy.apply` / `tick`), the same version rules. Every strategy call can be recorded, so a
test can replay them into a fresh production object and compare models bit for bit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from protocol.errors import ProtocolError, RejectedUpdate
from server.admission import Admission
from server.admitted import AdmittedUpdate
from server.secagg_apply import apply_cohort
from server.serving import ServingAverage
from server.strategies.base import StepResult, Strategy

__all__ = ["Call", "SimServer"]


@dataclass(frozen=True, slots=True)
class Call:
    """One strategy call as the simulator made it: ("apply", update) or ("tick", now)."""

    op: str
    update: AdmittedUpdate | None = None
    now: float = 0.0


class SimServer:
    def __init__(
        self,
        strategy: Strategy,
        admission: Admission,
        initial: np.ndarray,
        record: bool = False,
        serving: ServingAverage | None = None,
    ) -> None:
        self.strategy = strategy
        self.admission = admission
        self.model = np.asarray(initial, np.float32).copy()  # (n,) float32, never mutated in place
        strategy.start_from(self.model)  # as ServerCore: the defence's warm-up bound
        self.version = 0
        self.sequences: dict[str, tuple[int, str]] = {}
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.calls: list[Call] | None = [] if record else None
        self.serving = serving or ServingAverage()  # the server's own serving average
        self.staleness: list[int] = []  # tau of every accepted update, in arrival order
        self.samples_accepted = 0  # training samples behind the accepted updates
        self.step_norms: list[float] = []  # L2 length of every model step, in order

    def receive(self, device_id: str, payload: bytes, now: float) -> bool:
        """Admit and apply one update, then let time pass; True when the model stepped."""
        try:
            admitted = self.admission.admit(
                device_id,
                payload,
                version=self.version,
                sequences=self.sequences,
                strategy=self.strategy,
            )
        except (ProtocolError, RejectedUpdate) as exc:
            self.rejected[exc.reason.value] += 1
            return False
        self.sequences[device_id] = (admitted.update.seq, admitted.digest)
        self.accepted += 1
        self.staleness.append(self.version - admitted.update.base_version)
        self.samples_accepted += admitted.update.num_samples
        if self.calls is not None:
            self.calls.append(Call("apply", admitted.update))
        stepped = self._take(self.strategy.apply(self.model, self.version, admitted.update))
        return self.tick(now) or stepped

    def receive_cohort(self, record: dict[str, object], members: int) -> bool:
        """A secure-aggregation cohort's unmasked mean, applied as one buffer (sim/cohorts.py)."""
        self.accepted += members
        manifest = self.admission.manifest
        return self._take(apply_cohort(self.strategy, self.model, self.version, record, manifest))

    def clip_norm(self) -> float | None:
        """The DP clip norm C a device is told in the offer (None: no DP)."""
        privacy = self.strategy.privacy
        return None if privacy is None else privacy.status().clip_norm

    def budget_spent(self) -> bool:
        """The DP budget allows no further step: the model will not change again."""
        privacy = self.strategy.privacy
        return privacy is not None and privacy.exhausted

    def tick(self, now: float) -> bool:
        if self.calls is not None:
            self.calls.append(Call("tick", now=now))
        return self._take(self.strategy.tick(self.model, self.version, now))

    @property
    def max_step_norm(self) -> float:
        """The longest step the model took (0.0 before the first)."""
        return max(self.step_norms, default=0.0)

    @property
    def serving_model(self) -> np.ndarray:
        return self.serving.model(self.model)

    def _take(self, result: StepResult) -> bool:
        if result.stepped:
            step = (result.model - self.model).astype(np.float64)  # (n,)
            self.step_norms.append(float(np.linalg.norm(step)))
        self.model, self.version = result.model, result.version
        if result.stepped:
            self.serving.observe(self.model)
        return result.stepped
