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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fleet.sim.events import EventKind
from protocol.secagg.cohort import CohortConfig
from protocol.secagg.local import run_cohort
from server.secagg_apply import cohort_record

if TYPE_CHECKING:
    from fleet.sim.engine import _Run

__all__ = ["SimCohorts", "masked_bytes"]


def masked_bytes(config: CohortConfig) -> int:
    """Bytes of one masked update on the wire (vector + framing), for its upload time."""
    kept = max(1, round(config.kept_fraction * config.num_params))
    return kept * config.bits // 8 + 160


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
    def __init__(self, config: CohortConfig) -> None:
        self.config = config
        self._of_token: dict[int, _Cohort] = {}
        self._count = 0
        self.completed = 0
        self.abandoned = 0

    def fill(self, run: _Run) -> None:
        """Start whole cohorts while the concurrency and the idle pool allow."""
        k = self.config.target_size
        while len(run.busy) + k <= run.c.concurrency and len(run.pool) >= k:
            self._count += 1
            run._sync_downlink()
            model, version = run.downlink.model, run.downlink.version  # what devices hold
            cohort = _Cohort(self._count, model, version, run.q.now, {})
            for _ in range(k):
                d = run.pool.pick(run.rng)
                run._start(d)
                token = run.busy[d].token
                cohort.members[d] = token
                self._of_token[token] = cohort

    def arrived(self, run: _Run, d: int, token: int, delta: np.ndarray) -> None:
        cohort = self._of_token.pop(token, None)
        if cohort is None:
            return
        cohort.deltas[d] = delta
        if len(cohort.deltas) == self.config.threshold(len(cohort.members)):
            deadline = run.q.now + (run.q.now - cohort.started)  # stragglers: as long again
            for other, other_token in cohort.members.items():
                if other not in cohort.deltas and other_token in self._of_token:
                    run.q.push(deadline, EventKind.TIMEOUT, other, other_token)
        self._maybe_finish(run, cohort)

    def ended(self, run: _Run, d: int, token: int) -> None:
        """A member dropped, timed out or became ineligible before its masked update arrived."""
        cohort = self._of_token.pop(token, None)
        if cohort is not None:
            cohort.dropped.add(d)
            self._maybe_finish(run, cohort)

    def _maybe_finish(self, run: _Run, cohort: _Cohort) -> None:
        if not cohort.ended:
            return
        zero = np.zeros(self.config.num_params, np.float32)
        deltas = {f"sim-{d:05d}": cohort.deltas.get(d, zero) for d in cohort.members}
        dropped = {f"sim-{d:05d}" for d in cohort.dropped}
        result = run_cohort(
            self.config,
            deltas,
            cohort_id=cohort.number.to_bytes(16, "big"),
            seed=run.rng.bytes(32),
            base_version=cohort.base_version,
            drop_before_masked=dropped,
            rngs={
                d: np.random.default_rng([run.c.seed, cohort.number, i])
                for i, d in enumerate(deltas)
            },
        )
        run.uplink_bytes += sum(result.bytes_up.values())
        run.downlink_bytes += sum(result.bytes_down.values())
        summed = result.cohort.result
        if summed is None:
            self.abandoned += 1
            run.counts["cohorts_abandoned"] += 1
            return
        self.completed += 1
        run.counts["cohorts_applied"] += 1
        record = cohort_record(
            summed.cohort_id,
            summed.base_version,
            summed.mean,
            summed.num_samples,
            len(summed.members),
        )
        run.server.receive_cohort(record, len(summed.members))
