"""Secure aggregation in the simulator: async sessions grouped into cohorts of K.

With `RunConfig.secagg` set, the async scheduler starts devices a cohort at a time (K from the
idle pool, all from the current model, keys and shares exchanged at the start). A member that
drops or becomes ineligible before its masked update arrives is a drop-out *after sharing*; when
every member has ended, the real protocol (protocol/secagg/local.py: every message encoded,
masked, Shamir-recovered) runs over the members' real deltas, and the unmasked mean enters the
production strategy as one buffer (server/secagg_apply.py). A cohort left with fewer than t
masked updates is abandoned: its work is lost, as on a real fleet.

Stragglers: once t members' masked updates have arrived, the rest get as long again as the
t-th took (the cohort's phase deadline, as `phase_timeout_s` on the real server); a member still
training then is timed out and recovered as a drop-out. Virtual time is optimistic in one way:
a member that dropped is known at once, where a real server learns of it at the deadline.

Like the server's cohort state machine (protocol/secagg/cohort.py), `SimCohorts` does nothing to
the engine itself: each event returns the actions the engine then takes (a timeout to schedule,
a cohort's end, with its mean to apply and its bytes to count).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from protocol.secagg.cohort import CohortConfig
from protocol.secagg.local import run_cohort
from server.secagg_apply import cohort_record

__all__ = [
    "CohortAction",
    "CohortEnded",
    "SimCohorts",
    "Timeout",
    "masked_bytes",
]


def masked_bytes(config: CohortConfig) -> int:
    """Bytes of one masked update on the wire (vector + framing), for its upload time."""
    kept = max(1, round(config.kept_fraction * config.num_params))
    return kept * config.bits // 8 + 160


@dataclass(frozen=True)
class Timeout:
    """Schedule a straggler's timeout: the cohort's phase deadline."""

    device: int
    token: int
    at: float


@dataclass(frozen=True)
class CohortEnded:
    """A cohort ran the protocol: count its bytes, and apply its unmasked mean (`record`, over
    `members` devices) as one buffer; `record` None: fewer than t masked updates arrived, the
    cohort is abandoned and its work lost."""

    record: dict[str, object] | None
    members: int
    bytes_up: int
    bytes_down: int


CohortAction = Timeout | CohortEnded


@dataclass
class _Cohort:
    number: int
    base_model: np.ndarray  # (n,) float32
    base_version: int
    started: float
    members: dict[int, int]  # device -> session token
    deltas: dict[int, np.ndarray] = field(default_factory=dict)
    dropped: set[int] = field(default_factory=set)

    @property
    def ended(self) -> bool:
        return len(self.deltas) + len(self.dropped) == len(self.members)


class SimCohorts:
    """`rng` is the engine's generator (the protocol's seeds are drawn from it in event order)."""

    def __init__(self, config: CohortConfig, rng: np.random.Generator, seed: int) -> None:
        self.config = config
        self._rng = rng
        self._seed = seed
        self._of_token: dict[int, _Cohort] = {}
        self._count = 0
        self.completed = 0
        self.abandoned = 0

    def has_room(self, busy: int, concurrency: int, idle: int) -> bool:
        """Whether a whole cohort can start: K free slots and K idle devices."""
        k = self.config.target_size
        return busy + k <= concurrency and idle >= k

    def open(self, members: dict[int, int], model: np.ndarray, version: int, now: float) -> None:
        """A cohort started: `members` maps each device to its session token."""
        self._count += 1
        cohort = _Cohort(self._count, model, version, now, dict(members))
        for token in members.values():
            self._of_token[token] = cohort

    def arrived(self, d: int, token: int, delta: np.ndarray, now: float) -> list[CohortAction]:
        cohort = self._of_token.pop(token, None)
        if cohort is None:
            return []
        actions: list[CohortAction] = []
        cohort.deltas[d] = delta
        if len(cohort.deltas) == self.config.threshold(len(cohort.members)):
            deadline = now + (now - cohort.started)  # stragglers: as long again
            for other, other_token in cohort.members.items():
                if other not in cohort.deltas and other_token in self._of_token:
                    actions.append(Timeout(other, other_token, deadline))
        actions.extend(self._maybe_finish(cohort))
        return actions

    def ended(self, d: int, token: int) -> list[CohortAction]:
        """A member dropped, timed out or became ineligible before its masked update arrived."""
        cohort = self._of_token.pop(token, None)
        if cohort is None:
            return []
        cohort.dropped.add(d)
        return self._maybe_finish(cohort)

    def _maybe_finish(self, cohort: _Cohort) -> list[CohortAction]:
        if not cohort.ended:
            return []
        zero = np.zeros(self.config.num_params, np.float32)
        deltas = {f"sim-{d:05d}": cohort.deltas.get(d, zero) for d in cohort.members}
        dropped = {f"sim-{d:05d}" for d in cohort.dropped}
        result = run_cohort(
            self.config,
            deltas,
            cohort_id=cohort.number.to_bytes(16, "big"),
            seed=self._rng.bytes(32),
            base_version=cohort.base_version,
            drop_before_masked=dropped,
            rngs={
                d: np.random.default_rng([self._seed, cohort.number, i])
                for i, d in enumerate(deltas)
            },
        )
        up, down = sum(result.bytes_up.values()), sum(result.bytes_down.values())
        summed = result.cohort.result
        if summed is None:
            self.abandoned += 1
            return [CohortEnded(None, 0, up, down)]
        self.completed += 1
        record = cohort_record(
            summed.cohort_id,
            summed.base_version,
            summed.mean,
            summed.num_samples,
            len(summed.members),
        )
        return [CohortEnded(record, len(summed.members), up, down)]
