"""The demo's `report.json`: what one run measured, its writer and its validator.

Top-level keys (issue 7; every one always present):

    final_accuracy, best_accuracy, macro_f1     server's held-out test set; floats in [0, 1]: the
                                                serving (published) model's; the training
                                                iterate's final accuracy: iterate_final_accuracy
    time_to_target_s                            seconds from fleet start to target; null if never
    versions                                    global model versions produced
    updates_accepted                            int
    updates_rejected                            {reason: count}
    uplink_bytes, downlink_bytes                MQTT payload bytes devices sent / received
    uplink_bytes_to_target, downlink_bytes_to_target   the same when the target was reached
                                                (null if never): models, as deltas or whole
                                                offers, are most of the downlink
    bytes_per_update                            mean encoded ClientUpdate payload
    float32_bytes_per_update                    the same delta as raw float32 (num_params * 4)
    devices                                     [{device_id, slowdown, updates_sent,
                                                  updates_accepted, updates_rejected, ...}]

plus context: schema, strategy, codec, model, num_params, target_accuracy, duration_s,
stopped_by, broker_url, timeline ([{t_s, version, accuracy, macro_f1, uplink_bytes}]) and,
with --compare, `compare`: {strategy name: a full report of the same keys} for the other run(s).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.fsio import atomic_write_bytes
from protocol.errors import DataError

__all__ = [
    "REPORT_NAME",
    "REPORT_SCHEMA",
    "REQUIRED_KEYS",
    "DeviceParticipation",
    "EvalPoint",
    "RunReport",
    "validate_report",
    "write_report",
]

REPORT_NAME = "report.json"
REPORT_SCHEMA = 1
REQUIRED_KEYS: tuple[str, ...] = (
    "final_accuracy",
    "best_accuracy",
    "macro_f1",
    "time_to_target_s",
    "versions",
    "updates_accepted",
    "updates_rejected",
    "uplink_bytes",
    "downlink_bytes",
    "bytes_per_update",
    "float32_bytes_per_update",
    "devices",
)
_DEVICE_KEYS = ("device_id", "slowdown", "updates_sent", "updates_accepted", "updates_rejected")


@dataclass(frozen=True)
class EvalPoint:
    t_s: float  # seconds since the fleet started
    version: int
    accuracy: float
    macro_f1: float
    uplink_bytes: int  # cumulative, all devices, at the time of this evaluation
    iterate_accuracy: float | None = None  # the training iterate (accuracy: the serving model)
    downlink_bytes: int = 0  # cumulative, all devices (offers, deltas, acks)


@dataclass(frozen=True)
class DeviceParticipation:
    device_id: str
    slowdown: float
    updates_sent: int
    updates_accepted: int
    updates_rejected: int
    uplink_bytes: int
    downlink_bytes: int
    dropouts: int  # times its MQTT link was taken away by the simulated life


@dataclass(frozen=True)
class RunReport:
    strategy: str
    codec: str
    model: str
    num_params: int
    devices_count: int
    target_accuracy: float
    duration_s: float
    stopped_by: str  # "target" | "duration" | "interrupted"
    timeline: tuple[EvalPoint, ...]
    updates_accepted: int
    updates_rejected: Mapping[str, int]
    uplink_bytes: int
    downlink_bytes: int
    update_payload_bytes: int  # sum over every update sent (incl. re-sends), for the mean
    updates_sent: int
    devices: tuple[DeviceParticipation, ...]
    broker_url: str = ""
    compare: Mapping[str, RunReport] = field(default_factory=dict)
    privacy: Mapping[str, float] | None = None  # DP status of the final model; None = no DP

    @property
    def time_to_target_s(self) -> float | None:
        hit = self._hit()
        return None if hit is None else round(hit.t_s, 2)

    def _hit(self) -> EvalPoint | None:
        return next((p for p in self.timeline if p.accuracy >= self.target_accuracy), None)

    def to_json(self) -> dict[str, Any]:
        final = self.timeline[-1] if self.timeline else None
        best = max((p.accuracy for p in self.timeline), default=0.0)
        hit = self._hit()
        out: dict[str, Any] = {
            "schema": REPORT_SCHEMA,
            "final_accuracy": final.accuracy if final else 0.0,  # the serving (published) model
            "iterate_final_accuracy": final.iterate_accuracy if final else None,
            "best_accuracy": best,
            "macro_f1": final.macro_f1 if final else 0.0,
            "time_to_target_s": self.time_to_target_s,
            "versions": final.version if final else 0,
            "updates_accepted": self.updates_accepted,
            "updates_rejected": dict(sorted(self.updates_rejected.items())),
            "uplink_bytes": self.uplink_bytes,
            "downlink_bytes": self.downlink_bytes,
            "uplink_bytes_to_target": None if hit is None else hit.uplink_bytes,
            "downlink_bytes_to_target": None if hit is None else hit.downlink_bytes,
            "bytes_per_update": (
                round(self.update_payload_bytes / self.updates_sent) if self.updates_sent else 0
            ),
            "float32_bytes_per_update": self.num_params * 4,  # the raw delta, no framing
            "devices": [asdict(d) for d in self.devices],
            "strategy": self.strategy,
            "codec": self.codec,
            "model": self.model,
            "num_params": self.num_params,
            "devices_count": self.devices_count,
            "target_accuracy": self.target_accuracy,
            "duration_s": round(self.duration_s, 2),
            "stopped_by": self.stopped_by,
            "broker_url": self.broker_url,
            "updates_sent": self.updates_sent,
            "timeline": [asdict(p) for p in self.timeline],
        }
        if self.privacy is not None:
            out["epsilon_spent"] = self.privacy["epsilon"]
            out["privacy"] = dict(self.privacy)
        if self.compare:
            out["compare"] = {name: r.to_json() for name, r in self.compare.items()}
        return out


def _problems(doc: Any, where: str) -> list[str]:
    if not isinstance(doc, dict):
        return [f"{where}: not a JSON object"]
    bad = [f"{where}: missing key {k!r}" for k in REQUIRED_KEYS if k not in doc]
    if bad:
        return bad

    def num(key: str, lo: float, hi: float = math.inf, integer: bool = False) -> None:
        v = doc[key]
        kinds = (int,) if integer else (int, float)
        if isinstance(v, bool) or not isinstance(v, kinds) or not lo <= v <= hi:
            bad.append(f"{where}.{key}: expected {'int' if integer else 'number'} in [{lo}, {hi}]")

    for key in ("final_accuracy", "best_accuracy", "macro_f1"):
        num(key, 0.0, 1.0)
    for key in ("versions", "updates_accepted", "uplink_bytes", "downlink_bytes"):
        num(key, 0, integer=True)
    num("bytes_per_update", 0)
    num("float32_bytes_per_update", 1, integer=True)
    if doc["time_to_target_s"] is not None:
        num("time_to_target_s", 0.0)
    if not bad and doc["best_accuracy"] < doc["final_accuracy"]:
        bad.append(f"{where}: best_accuracy below final_accuracy")
    rejected = doc["updates_rejected"]
    if not isinstance(rejected, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in rejected.items()
    ):
        bad.append(f"{where}.updates_rejected: expected {{reason: count >= 0}}")
    devices = doc["devices"]
    if not isinstance(devices, list) or not devices:
        bad.append(f"{where}.devices: expected a non-empty list")
    else:
        for i, d in enumerate(devices):
            if not isinstance(d, dict) or any(k not in d for k in _DEVICE_KEYS):
                bad.append(f"{where}.devices[{i}]: needs keys {', '.join(_DEVICE_KEYS)}")
    for name, sub in (doc.get("compare") or {}).items():
        bad += _problems(sub, f"{where}.compare.{name}")
    return bad


def validate_report(doc: Any, source: str = REPORT_NAME) -> None:
    """Raise DataError listing every problem if `doc` is not a well-formed report."""
    problems = _problems(doc, source)
    if problems:
        raise DataError("; ".join(problems))


def write_report(report: RunReport, out_dir: Path) -> Path:
    """Validate, then write `out_dir/report.json` atomically (temp file, fsync, rename)."""
    doc = report.to_json()
    validate_report(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_NAME
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())
    return path
