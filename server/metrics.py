"""Prometheus metrics for the server, on a private registry (several servers may share a process).

fleetlearn_updates_accepted_total                 counter
fleetlearn_updates_rejected_total{reason}         counter, reason = protocol Reason value
fleetlearn_update_staleness                       histogram of tau for accepted updates
fleetlearn_model_version                          gauge
fleetlearn_ingest_seconds                         histogram: receive -> Ack sent (incl. fsync)
fleetlearn_eval_accuracy / _macro_f1 / _loss      gauges, last evaluation of the global model
fleetlearn_eval_version                           gauge, the version last evaluated
fleetlearn_dp_epsilon_spent / _epsilon_budget     gauges, differential privacy (when configured)
fleetlearn_dp_delta / _noise_multiplier / _clip_norm / _flushes / _budget_exhausted   gauges
fleetlearn_serving_accuracy / _macro_f1           gauges, last evaluation of the serving average
fleetlearn_publish_failures_total                 counter: publishes the MQTT link refused (an Ack,
                                                  a clear or an offer not sent; the worker goes on)
fleetlearn_refusal_acks_withheld_total            counter: refusals not answered (a flooding device)
fleetlearn_incoming_backlog                       gauge: messages received, not yet processed (when
                                                  it grows, the broker's queue for us fills next)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from protocol.errors import Reason
from server.privacy import PrivacyStatus

__all__ = ["ServerMetrics"]

_STALENESS_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class ServerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.accepted = Counter("fleetlearn_updates_accepted", "Updates admitted", registry=r)
        self.schema_1 = Counter(
            "fleetlearn_updates_schema_1",
            "Updates admitted with the deprecated schema 1 header ([admission] accept_schema_1)",
            registry=r,
        )
        self.rejected = Counter(
            "fleetlearn_updates_rejected", "Updates refused, by reason", ["reason"], registry=r
        )
        self.staleness = Histogram(
            "fleetlearn_update_staleness",
            "tau of accepted updates",
            buckets=_STALENESS_BUCKETS,
            registry=r,
        )
        self.version = Gauge("fleetlearn_model_version", "Global model version", registry=r)
        self.ingest = Histogram(
            "fleetlearn_ingest_seconds",
            "Update receive to Ack",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.eval_accuracy = Gauge("fleetlearn_eval_accuracy", "Last eval accuracy", registry=r)
        self.eval_f1 = Gauge("fleetlearn_eval_macro_f1", "Last eval macro-F1", registry=r)
        self.eval_loss = Gauge("fleetlearn_eval_loss", "Last eval loss", registry=r)
        self.eval_version = Gauge("fleetlearn_eval_version", "Version last evaluated", registry=r)
        self.dp = {
            key: Gauge(f"fleetlearn_dp_{key}", text, registry=r)
            for key, text in (
                ("epsilon_spent", "DP epsilon spent by the released models"),
                ("epsilon_budget", "DP epsilon budget"),
                ("delta", "DP delta"),
                ("noise_multiplier", "DP noise multiplier sigma"),
                ("clip_norm", "DP clip norm C for the next flush"),
                ("flushes", "DP noised releases so far"),
                ("budget_exhausted", "1 when the DP budget allows no further flush"),
            )
        }
        self.serving_accuracy = Gauge(
            "fleetlearn_serving_accuracy", "Last eval accuracy, serving model", registry=r
        )
        self.serving_f1 = Gauge(
            "fleetlearn_serving_macro_f1", "Last eval macro-F1, serving model", registry=r
        )
        self.publish_failed = Counter(
            "fleetlearn_publish_failures",
            "Publishes the MQTT link refused (e.g. no message id left)",
            registry=r,
        )
        self.refusals_withheld = Counter(
            "fleetlearn_refusal_acks_withheld",
            "Refusals not answered: over the device's refusal-Ack budget (server/refusal_acks.py)",
            registry=r,
        )
        self.backlog = Gauge(
            "fleetlearn_incoming_backlog",
            "Messages received from the broker and not yet processed by the server's worker",
            registry=r,
        )
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {"accepted": 0}
        self._publish_failures = 0
        self._server: Any = None

    def count_accepted(self, staleness: int | None, *, schema_1: bool = False) -> None:
        self.accepted.inc()
        if schema_1:
            self.schema_1.inc()
        if staleness is not None:
            self.staleness.observe(staleness)
        with self._lock:
            self._counts["accepted"] += 1

    def set_privacy(self, status: PrivacyStatus | None) -> None:
        if status is None:
            return
        values = {
            "epsilon_spent": status.epsilon_spent,
            "epsilon_budget": status.epsilon_budget,
            "delta": status.delta,
            "noise_multiplier": status.noise_multiplier,
            "clip_norm": status.clip_norm,
            "flushes": status.flushes,
            "budget_exhausted": float(status.exhausted),
        }
        for key, value in values.items():
            self.dp[key].set(value)

    def count_rejected(self, reason: Reason) -> None:
        self.rejected.labels(reason=reason.value).inc()
        with self._lock:
            self._counts[reason.value] = self._counts.get(reason.value, 0) + 1

    def count_publish_failure(self) -> None:
        self.publish_failed.inc()
        with self._lock:
            self._publish_failures += 1

    def publish_failures(self) -> int:
        with self._lock:
            return self._publish_failures

    def counts(self) -> dict[str, int]:
        """{"accepted": n, "<reason>": n, ...}: a plain snapshot for the demo and tests."""
        with self._lock:
            return dict(self._counts)

    def serve(self, address: str, port: int) -> int:
        """Start the HTTP endpoint; returns the bound port (pass 0 for a free one)."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
