"""The server half of the simulation: the production aggregation pipeline without the log.

No MQTT and no durable log, but the same bytes in and the same code after them as `ServerCore`
(server/pipeline.py: admission with the rate limit on the virtual clock, the fused ingest path,
the buffer, the reducer, the optimiser's step, the serving average). Every admitted update and
tick can be recorded, so a test can replay them into a fresh production object and compare
models bit for bit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from protocol.errors import Reason
from server.admission import Admission
from server.admitted import AdmittedUpdate
from server.pipeline import AggregationPipeline, PipelineState
from server.serving import ServingAverage
from server.strategies.base import Strategy

__all__ = ["Call", "SimServer"]


@dataclass(frozen=True, slots=True)
class Call:
    """One strategy call as the simulator made it: ("apply", update) or ("tick", now)."""

    op: str
    update: AdmittedUpdate | None = None
    now: float = 0.0


class SimServer(PipelineState):
    def __init__(
        self,
        strategy: Strategy,
        admission: Admission,
        initial: np.ndarray,
        record: bool = False,
        serving: ServingAverage | None = None,
    ) -> None:
        super().__init__(AggregationPipeline(admission, initial, strategy, serving))
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.calls: list[Call] | None = [] if record else None
        self.staleness: list[int] = []  # tau of every accepted update, in arrival order
        self.samples_accepted = 0  # training samples behind the accepted updates
        self.step_norms: list[float] = []  # L2 length of every model step, in order

    def receive(self, device_id: str, payload: bytes, now: float) -> bool:
        """One update through the pipeline, then time passes; True when the model stepped."""
        before = self.pipeline.model
        received = self.pipeline.receive(device_id, payload, now=now, log=None)
        admitted = received.admitted
        if admitted is None:  # refused, or a redelivery (counted as the replay it is)
            ack = received.ack
            self.rejected[Reason.REPLAY.value if ack.accepted else ack.reason.value] += 1
            return False
        self.accepted += 1
        self.staleness.append(admitted.staleness)
        self.samples_accepted += admitted.message.num_samples
        if self.calls is not None:
            self.calls.append(Call("apply", admitted.update))
        self._note_step(before, received.stepped)
        return self.tick(now) or received.stepped

    def receive_cohort(self, record: dict[str, object], members: int) -> bool:
        """A secure-aggregation cohort's unmasked mean, applied as one buffer (sim/cohorts.py)."""
        self.accepted += members
        before = self.pipeline.model
        return self._note_step(before, self.pipeline.apply_cohort(record))

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
        before = self.pipeline.model
        return self._note_step(before, self.pipeline.tick(now))

    @property
    def max_step_norm(self) -> float:
        """The longest step the model took (0.0 before the first)."""
        return max(self.step_norms, default=0.0)

    def _note_step(self, before: np.ndarray, stepped: bool) -> bool:
        if stepped:
            step = (self.pipeline.model - before).astype(np.float64)  # (n,)
            self.step_norms.append(float(np.linalg.norm(step)))
        return stepped
