"""The console's read model: what the server told it (server/observer.py) plus `status()`.

The server calls the observer methods on its worker thread; the web handlers read `fleet()`,
`models()`, ... on theirs. Both sides hold one lock for a few dictionary operations only. A
device's status is kept as the raw bytes it last sent and decoded (bounded, checked against its
topic by the server's own rule) when a page asks, at most once per new status: a status flood
costs a dictionary store per message, never a decode.

Everything is bounded: `max_devices` device records (more are counted, not kept), the last
`history` published versions, cohorts and time buckets.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import ProtocolError, Reason
from protocol.messages import DeviceStatus
from protocol.topics import DeviceTopicKind, parse_device_topic
from server.app import ServerStatus
from server.evaluation import EvalResult
from server.privacy import PrivacyStatus
from server.status_guard import STATUS_MAX_BYTES, acceptable_status

__all__ = ["FleetReadModel"]

_OK = Reason.OK.value
_BUCKET_S = 10.0  # update-flow chart: accepted/refused per 10 s


@dataclass
class _Device:
    last_seen: float  # wall clock of the last message from it (status or update)
    raw_status: bytes | None = None  # latest status not yet decoded
    status: DeviceStatus | None = None
    status_problem: str = ""  # "cleared", "invalid": why there is no status to show
    outcomes: Counter[str] = field(default_factory=Counter)  # Reason value -> count
    last_outcome: str = ""


@dataclass
class _Release:
    version: int
    at: float
    epsilon: float | None
    iterate: EvalResult | None = None
    serving: EvalResult | None = None


class FleetReadModel:
    """Implements server.observer.ServerObserver; pages read it through the methods below."""

    def __init__(
        self,
        fleet: str,
        status: Callable[[], ServerStatus],
        *,
        max_devices: int = 100_000,
        history: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fleet = fleet
        self._status = status
        self._max_devices = max_devices
        self._clock = clock
        self._lock = threading.Lock()
        self._devices: dict[str, _Device] = {}
        self._devices_not_kept = 0
        self._releases: deque[_Release] = deque(maxlen=history)
        self._cohorts: deque[dict[str, Any]] = deque(maxlen=history)
        self._cohort_totals: Counter[str] = Counter()
        self._flow: deque[tuple[float, Counter[str]]] = deque(maxlen=360)  # 1 h of buckets
        self.started_at = clock()

    # --- the server's side (worker thread: record and return) -------------------------------

    def device_message(self, topic: str, payload: bytes, now: float) -> None:
        del now  # the server's clock is monotonic; pages show wall-clock times
        try:
            parsed = parse_device_topic(topic)
        except ProtocolError:
            return
        if parsed.fleet != self._fleet or parsed.kind not in (
            DeviceTopicKind.STATUS,
            DeviceTopicKind.UPDATE,
        ):
            return
        with self._lock:
            device = self._device(parsed.device_id)
            if device is None:
                return
            if parsed.kind is DeviceTopicKind.UPDATE:
                device.last_seen = self._clock()
            elif not payload:  # cleared: by the server (invalid) or by whoever removed it
                device.raw_status, device.status, device.status_problem = None, None, "cleared"
            else:
                device.last_seen = self._clock()
                big = len(payload) > STATUS_MAX_BYTES
                device.raw_status = None if big else payload
                device.status_problem = "invalid" if big else ""

    def update_outcome(self, device_id: str, reason: str, staleness: int | None) -> None:
        del staleness
        now = self._clock()
        with self._lock:
            bucket_start = now - now % _BUCKET_S
            if not self._flow or self._flow[-1][0] != bucket_start:
                self._flow.append((bucket_start, Counter()))
            self._flow[-1][1][reason] += 1
            device = self._device(device_id) if device_id else None
            if device is not None:
                device.outcomes[reason] += 1
                device.last_outcome = reason

    def model_published(self, version: int, privacy: PrivacyStatus | None) -> None:
        epsilon = None if privacy is None else privacy.epsilon_spent
        with self._lock:
            self._releases.append(_Release(version, self._clock(), epsilon))

    def model_evaluated(self, iterate: EvalResult, serving: EvalResult) -> None:
        with self._lock:
            for release in reversed(self._releases):
                if release.version == iterate.version:
                    release.iterate, release.serving = iterate, serving
                    return

    def cohort_finished(self, cohort_id: str, members: int, ok: bool, base_version: int) -> None:
        with self._lock:
            self._cohort_totals["completed" if ok else "abandoned"] += 1
            self._cohorts.append(
                {
                    "cohort": cohort_id[:16],
                    "members": members,
                    "outcome": "unmasked" if ok else "abandoned",
                    "base_version": base_version,
                    "at": self._clock(),
                }
            )

    def _device(self, device_id: str) -> _Device | None:
        device = self._devices.get(device_id)
        if device is None:
            if len(self._devices) >= self._max_devices:
                self._devices_not_kept += 1
                return None
            device = self._devices[device_id] = _Device(self._clock())
        return device

    # --- the pages' side --------------------------------------------------------------------

    def fleet(self, *, query: str = "", limit: int = 200) -> dict[str, Any]:
        """Devices by state, model version and eligibility reason; a page of device rows."""
        now = self._clock()
        rows: list[dict[str, Any]] = []
        by_state: Counter[str] = Counter()
        by_version: Counter[str] = Counter()
        by_reason: Counter[str] = Counter()
        online = matched = 0
        with self._lock:
            for device_id in sorted(self._devices):
                device = self._devices[device_id]
                status = self._decoded(device_id, device)
                if status is None:
                    state, version, reason = device.status_problem or "no status", None, ""
                else:
                    state = status.state if status.online else "offline"
                    version, reason = status.model_version, status.reason
                    online += status.online
                by_state[state] += 1
                by_version["none" if version is None else str(version)] += 1
                if reason:
                    by_reason[reason] += 1
                if query and query not in device_id:
                    continue
                matched += 1
                if len(rows) < limit:
                    rows.append(_device_row(device_id, device, status, state, now))
            total, not_kept = len(self._devices), self._devices_not_kept
        return {
            "devices_total": total,
            "devices_not_kept": not_kept,
            "online": online,
            "by_state": dict(by_state),
            "by_version": dict(by_version),
            "by_reason": dict(by_reason),
            "matched": matched,
            "devices": rows,
            "server": self._server_summary(),
        }

    def models(self) -> dict[str, Any]:
        """The versions published, each with its server-side evaluation (iterate and serving)."""
        with self._lock:
            releases = [_release_row(r) for r in self._releases]
        return {"server": self._server_summary(), "releases": releases}

    def updates(self, *, top: int = 50) -> dict[str, Any]:
        """Accepted and refused by reason: totals, per 10 s, and the devices refused most."""
        counts = self._status().counts
        with self._lock:
            flow = [{"t": t, **dict(c)} for t, c in self._flow]
            per_device: list[dict[str, Any]] = [
                {
                    "device_id": d,
                    "accepted": dev.outcomes[_OK],
                    "refused": {r: n for r, n in dev.outcomes.items() if r != _OK},
                    "last": dev.last_outcome,
                }
                for d, dev in self._devices.items()
                if dev.outcomes
            ]
        per_device.sort(key=lambda r: (-sum(r["refused"].values()), -r["accepted"]))
        return {
            "accepted": counts.get("accepted", 0),
            "refused": {r: n for r, n in counts.items() if r != "accepted" and n},
            "flow": flow,
            "bucket_s": _BUCKET_S,
            "devices": per_device[:top],
        }

    def privacy(self) -> dict[str, Any]:
        """Epsilon spent against the budget, and per release (when DP is on)."""
        status = self._status().privacy
        if status is None:
            return {"enabled": False}
        with self._lock:
            releases = [
                {"version": r.version, "at": r.at, "epsilon": r.epsilon}
                for r in self._releases
                if r.epsilon is not None
            ]
        return {
            "enabled": True,
            "epsilon_spent": status.epsilon_spent,
            "epsilon_budget": status.epsilon_budget,
            "delta": status.delta,
            "noise_multiplier": status.noise_multiplier,
            "clip_norm": status.clip_norm,
            "releases_noised": status.flushes,
            "exhausted": status.exhausted,
            "accountant": status.accountant,
            "releases": releases,
        }

    def cohorts(self) -> dict[str, Any]:
        with self._lock:
            return {
                "completed": self._cohort_totals["completed"],
                "abandoned": self._cohort_totals["abandoned"],
                "cohorts": list(self._cohorts)[::-1],
            }

    def _decoded(self, device_id: str, device: _Device) -> DeviceStatus | None:
        if device.raw_status is not None:  # decoded once, under the lock, when a page asks
            device.status = acceptable_status(device.raw_status, device_id)
            device.status_problem = "" if device.status is not None else "invalid"
            device.raw_status = None
        return device.status

    def _server_summary(self) -> dict[str, Any]:
        s = self._status()
        return {
            "version": s.version,
            "published_version": s.published_version,
            "pending": s.pending,
            "accepted": s.counts.get("accepted", 0),
            "refused": sum(n for r, n in s.counts.items() if r != "accepted"),
            "uptime_s": self._clock() - self.started_at,
        }


def _device_row(
    device_id: str, device: _Device, status: DeviceStatus | None, state: str, now: float
) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "state": state,
        "online": bool(status and status.online),
        "model_version": None if status is None else status.model_version,
        "reason": "" if status is None else status.reason,
        "conditions": {} if status is None else status.conditions,
        "last_seen_s": round(now - device.last_seen, 1),
        "accepted": device.outcomes[_OK],
        "refused": sum(n for r, n in device.outcomes.items() if r != _OK),
        "last_outcome": device.last_outcome,
    }


def _eval_row(e: EvalResult | None) -> dict[str, float] | None:
    return None if e is None else {"accuracy": e.accuracy, "macro_f1": e.macro_f1, "loss": e.loss}


def _release_row(r: _Release) -> dict[str, Any]:
    return {
        "version": r.version,
        "at": r.at,
        "epsilon": r.epsilon,
        "iterate": _eval_row(r.iterate),
        "serving": _eval_row(r.serving),
    }
