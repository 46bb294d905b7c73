"""One simulated run: a fleet, a server strategy, a codec, a virtual clock.

Scheduling (the only thing that differs between sync and async; the maths is the server's):
  async (FedAsync, FedBuff): keep `concurrency` devices training; when one finishes or drops, start
      another eligible idle device chosen uniformly at random. Each starts from the current model.
      With `session_timeout` (Papaya, Huba et al. 2022), a session running longer than that
      multiple of the median session time is aborted and its slot goes to another device; the
      median is the server's own running estimate over finished (and timed-out) sessions, so
      this is what a production orchestrator could do, not an oracle on device speeds.
  sync (FedAvg): each round selects `concurrency` devices (the cohort plus over-selection) from the
      current model; the strategy closes the round at `round_size` arrivals or at its deadline.
      Devices still training when a round closes are told to stop (their work is discarded, no
      uplink bytes). A round left with nobody training selects again.

A session: download the model (whole-model bytes / downlink, deltas or not; fleet/sim/downlink.py
counts the bytes), train (samples * s_per_sample), upload (real message bytes / uplink). It dies
if the device drops out (probability `dropout_p`, at a uniform point of download+training) or its
eligibility window closes first. Training itself is real and
runs lazily when the virtual training ends, from the model version the device downloaded.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np

from fleet.attacks import Attack
from fleet.sim.cohorts import (
    CohortAction,
    SimCohorts,
    Timeout,
    masked_bytes,
)
from fleet.sim.downlink import SimDownlink
from fleet.sim.events import EventKind, EventQueue
from fleet.sim.profiles import DeviceProfile
from fleet.sim.server_side import SimServer
from fleet.sim.training import LocalBudget, LocalTrainer
from fleet.sim.uplink import Uplink
from protocol.secagg.cohort import CohortConfig
from server.privacy import DpMechanism

__all__ = ["Mode", "Point", "RunConfig", "RunResult", "run_simulation"]


class Mode(Enum):
    SYNC = "sync"
    ASYNC = "async"


@dataclass(frozen=True)
class RunConfig:
    label: str
    mode: Mode
    concurrency: int  # devices training at once (async) / selected per round (sync)
    duration_s: float  # virtual
    eval_every_s: float = 300.0  # virtual; evaluation is the costly wall-clock part
    budget: LocalBudget = field(default_factory=LocalBudget)
    seed: int = 0
    # async only: abort a session after this multiple of the running median session time
    # (None: never). Timed-out work is discarded and its uplink bytes never counted, as for the
    # sync baseline's over-selected stragglers.
    session_timeout: float | None = None
    timeout_warmup: int = 20  # finished sessions needed before the median is trusted
    # hostile devices (fleet/attacks.py): they poison their data and/or delta, then send it
    # through the same codec and admission path as everyone else
    attack: Attack | None = None
    attackers: frozenset[int] = frozenset()
    secagg: CohortConfig | None = None  # async only: secure-aggregation cohorts (sim/cohorts.py)
    # new versions also as deltas in this codec (server/downlink.py); None: whole offers only
    downlink_codec: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Point:
    t: float  # virtual seconds
    uplink_bytes: int
    accuracy: float
    version: int
    accepted: int
    serving_accuracy: float | None = None  # the serving average's (None: serving is off)
    # device time spent in sessions so far (any outcome, running ones up to t): what over-
    # committing concurrency costs the fleet, against what it saves in time
    device_seconds: float = 0.0
    downlink_bytes: int = 0  # models pushed to devices so far (fleet/sim/downlink.py)
    downlink_whole_float32_bytes: int = 0  # the same pushes as whole float32 offers


@dataclass(frozen=True)
class RunResult:
    label: str
    curve: tuple[Point, ...]
    accepted: int
    rejected: dict[str, int]
    counts: dict[str, int]  # sessions, dropouts, ineligible, aborted, ...
    uplink_bytes: int
    downlink_bytes: int  # model pushes (deltas or whole offers) plus secure-aggregation messages
    wall_s: float
    wall_train_s: float
    wall_eval_s: float
    privacy: dict[str, float] | None = None  # the DP status at the end (epsilon spent, ...)
    # what the run's slots were spent on (virtual seconds of sessions, any outcome) and the
    # staleness of every accepted update: the "why is async not faster" measurements
    slot_seconds: dict[str, float] = field(default_factory=dict)  # straggler / other
    staleness: tuple[int, ...] = ()
    downlink_whole_float32_bytes: int = 0  # the model pushes as whole float32 offers

    @property
    def final_accuracy(self) -> float:
        return self.curve[-1].accuracy


@dataclass(slots=True)
class _Session:
    token: int
    device: int
    base_model: np.ndarray  # (n,) float32: the model the device downloaded (never mutated)
    base_version: int
    samples: np.ndarray  # indices into the training set
    started: float = 0.0  # virtual time the session started
    payload: bytes = b""
    residual: np.ndarray | None = None
    delta: np.ndarray | None = None  # secure aggregation: masked inside the cohort, not encoded


class _Pool:
    """Eligible idle devices: O(1) add/remove and a uniform random pick, deterministic order."""

    def __init__(self) -> None:
        self._items: list[int] = []
        self._pos: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, d: int) -> None:
        if d not in self._pos:
            self._pos[d] = len(self._items)
            self._items.append(d)

    def discard(self, d: int) -> None:
        i = self._pos.pop(d, None)
        if i is not None:
            last = self._items.pop()
            if last != d:
                self._items[i] = last
                self._pos[last] = i

    def pick(self, rng: np.random.Generator) -> int:
        d = self._items[int(rng.integers(len(self._items)))]
        self.discard(d)
        return d


class _Run:
    def __init__(
        self,
        config: RunConfig,
        fleet: list[DeviceProfile],
        slices: list[np.ndarray],
        data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        trainer: LocalTrainer,
        server: SimServer,
        uplink: Uplink,
    ) -> None:
        self.c, self.fleet, self.slices, self.trainer = config, fleet, slices, trainer
        self.x, self.y, self.x_test, self.y_test = data
        self.server, self.uplink = server, uplink
        self.q = EventQueue()
        self.rng = np.random.default_rng([config.seed, 0xF1EE7])
        self.pool = _Pool()
        self.available = np.zeros(len(fleet), bool)
        self.busy: dict[int, _Session] = {}
        self.seq = np.zeros(len(fleet), np.int64)
        self.tokens = 0
        self.round_id = 0
        self.counts: Counter[str] = Counter()
        self.uplink_bytes = self.downlink_bytes = 0  # downlink_bytes: secure aggregation's
        self.model_bytes = int(server.model.size) * 4 + 256  # an offer: float32 weights + header
        self.downlink = SimDownlink(
            server.admission.manifest, server.model, len(fleet), config.downlink_codec
        )
        self.curve: list[Point] = []
        self.durations: list[float] = []  # sorted: finished async sessions (timed-out: censored)
        self.slot_seconds: dict[str, float] = {"straggler": 0.0, "other": 0.0}  # session time held
        self.wall_train = self.wall_eval = 0.0
        self.cohorts = (
            SimCohorts(config.secagg, self.rng, config.seed) if config.secagg is not None else None
        )

    # --- bookkeeping ---------------------------------------------------------------------

    def run(self) -> None:
        for p in self.fleet:
            for start, end in p.windows.intervals:
                self.q.push(start, EventKind.WINDOW_OPEN, p.index)
                self.q.push(end, EventKind.WINDOW_CLOSE, p.index)
        self.q.push(0.0, EventKind.EVAL)
        if self.c.mode is Mode.SYNC:
            self.q.push(0.0, EventKind.DEADLINE, payload=-1)  # opens round 0 after t=0 windows
        handlers = {
            EventKind.WINDOW_OPEN: self._window_open,
            EventKind.WINDOW_CLOSE: self._window_close,
            EventKind.COMPUTE_DONE: self._compute_done,
            EventKind.ARRIVE: self._arrive,
            EventKind.DROP: self._drop,
            EventKind.DEADLINE: self._deadline,
            EventKind.TIMEOUT: self._timeout,
            EventKind.EVAL: self._eval,
        }
        while self.q and self.q.peek_time() < self.c.duration_s:
            if self.server.budget_spent():  # DP: the model is final; stop simulating sessions
                self.counts["stopped_by_privacy_budget"] = 1
                self._record()  # the final model, when it became final
                return
            ev = self.q.pop()
            handlers[ev.kind](ev.device, ev.payload)
            self._sync_downlink()
        if not self.curve or self.curve[-1].t < self.c.duration_s:
            self.q.now = self.c.duration_s
            self._record()
        for d, s in self.busy.items():  # sessions still running at the end held their slot too
            kind = "straggler" if self.fleet[d].straggler else "other"
            self.slot_seconds[kind] += self.c.duration_s - s.started

    def _sync_downlink(self) -> None:
        """A new server version is published (pushed to connected devices) before anyone
        starts from it."""
        if self.server.version != self.downlink.version:
            self.downlink.publish(self.server.model, self.server.version)

    def _record(self) -> None:
        self._sync_downlink()
        t0 = time.perf_counter()
        s = self.server
        acc = self.trainer.accuracy(s.model, self.x_test, self.y_test)
        served = None
        if s.serving.enabled:
            served = self.trainer.accuracy(s.serving_model, self.x_test, self.y_test)
        self.wall_eval += time.perf_counter() - t0
        busy = sum(self.slot_seconds.values()) + sum(
            self.q.now - b.started for b in self.busy.values()
        )
        down_bytes = self.downlink.bytes + self.downlink_bytes
        whole = self.downlink.whole_float32_bytes
        point = Point(self.q.now, self.uplink_bytes, acc, s.version, s.accepted, served, busy)
        self.curve.append(
            replace(point, downlink_bytes=down_bytes, downlink_whole_float32_bytes=whole)
        )

    def _eval(self, _device: int, _payload: object) -> None:
        self._record()
        self.q.push(self.q.now + self.c.eval_every_s, EventKind.EVAL)

    # --- availability ----------------------------------------------------------------------

    def _window_open(self, d: int, _payload: object) -> None:
        self.available[d] = True
        self.downlink.connect(d)
        if d not in self.busy:
            self.pool.add(d)
        self._fill()

    def _window_close(self, d: int, _payload: object) -> None:
        self.available[d] = False
        self.downlink.disconnect(d)
        self.pool.discard(d)
        if d in self.busy:
            self.counts["ineligible"] += 1  # unplugged/busy: training stops at the next step
            self._end_session(d)
            self._fill()

    # --- sessions ----------------------------------------------------------------------------

    def _start(self, d: int) -> None:
        p, now = self.fleet[d], self.q.now
        idx = self.slices[d]
        if len(idx) > self.c.budget.max_samples:
            idx = np.sort(self.rng.choice(idx, self.c.budget.max_samples, replace=False))
        self.tokens += 1
        self._sync_downlink()
        model, version = self.downlink.model, self.downlink.version  # what devices hold
        s = _Session(self.tokens, d, model, version, idx, now)
        self.busy[d] = s
        self.counts["sessions"] += 1
        busy_s = (
            self.model_bytes / p.downlink_bps + len(idx) * self.c.budget.epochs * p.s_per_sample
        )
        if self.rng.random() < p.dropout_p:
            self.q.push(now + self.rng.uniform(0.0, busy_s), EventKind.DROP, d, s.token)
        else:
            self.q.push(now + busy_s, EventKind.COMPUTE_DONE, d, s.token)
        limit = self._time_limit()
        if limit is not None:
            self.q.push(now + limit, EventKind.TIMEOUT, d, s.token)

    def _time_limit(self) -> float | None:
        """The async session time limit now: a multiple of the running median, once known."""
        factor = self.c.session_timeout
        if self.c.mode is not Mode.ASYNC or factor is None:
            return None
        n = len(self.durations)
        if n < self.c.timeout_warmup:
            return None
        median = 0.5 * (self.durations[(n - 1) // 2] + self.durations[n // 2])
        return factor * median

    def _current(self, d: int, token: object) -> _Session | None:
        s = self.busy.get(d)
        return s if s is not None and s.token == token else None

    def _end_session(self, d: int) -> None:
        s = self.busy.pop(d)
        if self.cohorts is not None and s.delta is None:  # ended before its masked update
            self._take_cohort_actions(self.cohorts.ended(d, s.token))
        self.slot_seconds["straggler" if self.fleet[d].straggler else "other"] += (
            self.q.now - s.started
        )
        if self.available[d]:
            self.pool.add(d)

    def _compute_done(self, d: int, token: object) -> None:
        s = self._current(d, token)
        if s is None:
            return
        t0 = time.perf_counter()
        x, y = self.x[s.samples], self.y[s.samples]
        attack = self.c.attack if d in self.c.attackers else None
        if attack is not None and attack.opening:  # acts on arrivals, not chosen devices
            attack = None
        if attack is not None:
            x, y = attack.poison_data(x, y)
            self.counts["hostile_updates"] += 1
        seed = int(self.rng.integers(1 << 31))
        weights, steps = self.trainer.local_update(s.base_model, x, y, self.c.budget, seed)
        delta = weights - s.base_model  # (n,) float32
        if attack is not None:
            delta = attack.poison_delta(delta, d, int(self.seq[d]) + 1)
        self.wall_train += time.perf_counter() - t0
        self.seq[d] += 1
        if self.cohorts is not None:
            size = masked_bytes(self.cohorts.config)
            self.q.push(self.q.now + size / self.fleet[d].uplink_bps, EventKind.ARRIVE, d, token)
            s.residual = delta  # handed to the cohort on arrival
            return
        s.payload, s.residual = self.uplink.encode(
            d,
            _device_id(d),
            int(self.seq[d]),
            s.base_version,
            len(s.samples),
            steps,
            delta,
            self.server.clip_norm(),
        )
        self.q.push(
            self.q.now + len(s.payload) / self.fleet[d].uplink_bps, EventKind.ARRIVE, d, token
        )

    def _arrive(self, d: int, token: object) -> None:
        s = self._current(d, token)
        if s is None:
            return
        if self.cohorts is not None and s.residual is not None:
            s.delta = s.residual
            if self.c.mode is Mode.ASYNC:
                bisect.insort(self.durations, self.q.now - s.started)
            self._end_session(d)
            self._take_cohort_actions(self.cohorts.arrived(d, s.token, s.delta, self.q.now))
            self._fill()
            return
        payload = self._opening_payload(d, s) or s.payload
        self.uplink_bytes += len(payload)
        self.uplink.delivered(d, s.residual)
        if self.c.mode is Mode.ASYNC:
            bisect.insort(self.durations, self.q.now - s.started)
        self._end_session(d)
        stepped = self.server.receive(_device_id(d), payload, self.q.now)
        if stepped and self.c.mode is Mode.SYNC:
            self._open_round()
        self._fill()

    def _opening_payload(self, d: int, s: _Session) -> bytes | None:
        """An opening attack (fresh-poison) owns the first updates a fresh server receives: its
        devices skip training and publish at once, so they beat every honest session. Here the
        first arrivals stand in for them (same slot, base version and wire format, the
        attacker's delta); None once the attacker has sent its `first_updates`."""
        attack = self.c.attack
        if attack is None or not attack.opening:
            return None
        if self.counts["hostile_updates"] >= attack.first_updates:
            return None
        self.counts["hostile_updates"] += 1
        delta = attack.poison_delta(np.zeros_like(s.base_model), d, int(self.seq[d]))
        seq, samples = int(self.seq[d]), len(s.samples)
        payload, _ = self.uplink.encode(d, _device_id(d), seq, s.base_version, samples, 1, delta)
        return payload

    def _drop(self, d: int, token: object) -> None:
        if self._current(d, token) is not None:
            self.counts["dropouts"] += 1
            self._end_session(d)
            self._fill()

    def _timeout(self, d: int, token: object) -> None:
        s = self._current(d, token)
        if s is not None:
            # Censored at the limit (its true time is longer): with a limit above the median,
            # this keeps the running median unbiased instead of ratcheting it down.
            bisect.insort(self.durations, self.q.now - s.started)
            self.counts["timed_out"] += 1
            self._end_session(d)
            self._fill()

    # --- scheduling ------------------------------------------------------------------------

    def _fill(self) -> None:
        if self.cohorts is not None:
            self._fill_cohorts(self.cohorts)
        elif self.c.mode is Mode.ASYNC:
            while len(self.busy) < self.c.concurrency and self.pool:
                self._start(self.pool.pick(self.rng))
        elif self.round_id > 0 and not self.busy and self.pool and not self.server.strategy.pending:
            # A round with nobody training and nothing received (all dropped, or nobody was
            # eligible when it opened): select again for the same round.
            self.counts["reselections"] += 1
            self._select()

    def _fill_cohorts(self, cohorts: SimCohorts) -> None:
        """Start whole cohorts while the concurrency and the idle pool allow."""
        while cohorts.has_room(len(self.busy), self.c.concurrency, len(self.pool)):
            self._sync_downlink()
            model, version = self.downlink.model, self.downlink.version  # what devices hold
            members: dict[int, int] = {}
            for _ in range(cohorts.config.target_size):
                d = self.pool.pick(self.rng)
                self._start(d)
                members[d] = self.busy[d].token
            cohorts.open(members, model, version, self.q.now)

    def _take_cohort_actions(self, actions: list[CohortAction]) -> None:
        for action in actions:
            if isinstance(action, Timeout):
                self.q.push(action.at, EventKind.TIMEOUT, action.device, action.token)
                continue
            self.uplink_bytes += action.bytes_up
            self.downlink_bytes += action.bytes_down
            if action.record is None:
                self.counts["cohorts_abandoned"] += 1
            else:
                self.counts["cohorts_applied"] += 1
                self.server.receive_cohort(action.record, action.members)

    def _select(self) -> None:
        for _ in range(min(self.c.concurrency, len(self.pool))):
            self._start(self.pool.pick(self.rng))

    def _open_round(self) -> None:
        for d in list(self.busy):  # the round closed: stragglers of the old round stop
            self.counts["aborted"] += 1
            self._end_session(d)
        self.round_id += 1
        self.server.tick(self.q.now)  # starts the strategy's round clock
        deadline = getattr(self.server.strategy, "deadline_s", None)
        if deadline is not None:
            self.q.push(self.q.now + float(deadline), EventKind.DEADLINE, payload=self.round_id)
        self._select()

    def _deadline(self, _device: int, round_id: object) -> None:
        if round_id == -1:
            self._open_round()
            return
        if round_id != self.round_id:
            return
        if self.server.tick(self.q.now):
            self._open_round()
        else:
            self._fill()


def _device_id(d: int) -> str:
    return f"sim-{d:05d}"


def run_simulation(
    config: RunConfig,
    fleet: list[DeviceProfile],
    slices: list[np.ndarray],
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    trainer: LocalTrainer,
    server: SimServer,
    uplink: Uplink,
) -> RunResult:
    """Run one strategy on one fleet for `config.duration_s` virtual seconds."""
    if len(slices) != len(fleet):
        raise ValueError(f"{len(slices)} data slices for {len(fleet)} devices")
    if config.concurrency < 1 or not config.duration_s > 0:
        raise ValueError("concurrency must be >= 1 and duration_s > 0")
    if config.session_timeout is not None and not config.session_timeout > 1.0:
        raise ValueError("session_timeout must be > 1 (a multiple of the median session time)")
    t0 = time.perf_counter()
    r = _Run(config, fleet, slices, data, trainer, server, uplink)
    r.run()
    return RunResult(
        label=config.label,
        curve=tuple(r.curve),
        accepted=server.accepted,
        rejected=dict(server.rejected),
        counts=dict(r.counts),
        uplink_bytes=r.uplink_bytes,
        downlink_bytes=r.downlink.bytes + r.downlink_bytes,
        downlink_whole_float32_bytes=r.downlink.whole_float32_bytes,
        wall_s=time.perf_counter() - t0,
        wall_train_s=r.wall_train,
        wall_eval_s=r.wall_eval,
        privacy=_privacy(server.strategy.privacy),
        slot_seconds=dict(r.slot_seconds),
        staleness=tuple(server.staleness),
    )


def _privacy(mechanism: DpMechanism | None) -> dict[str, float] | None:
    if mechanism is None:
        return None
    status = mechanism.status()
    return status.offer_fields() | {"exhausted": float(status.exhausted)}
