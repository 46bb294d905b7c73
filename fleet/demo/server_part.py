"""The real server (server/app.py `ServerApp`, in-process) behind fleet.demo.parts.ServerHandle.

The demo writes the same config a user would put in server.toml (as a dict, validated by the
server's own `parse_config`), so the demo exercises the operator's path, not a side door.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from console import ConsoleServer, ListenConfig, attach
from console.web import parse_listen
from fleet.demo.parts import Evaluation, FleetSetup
from server.app import ServerApp
from server.config import parse_config
from server.recommended import recommended_strategy
from server.robust import DEFENCES

__all__ = ["DemoServer", "ServerTuning", "server_config_doc", "start_server"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerTuning:
    """Strategy and publishing parameters for a 20-device demo fleet."""

    fedasync_alpha: float = 0.6  # FedAsync mixing rate (paper: 0.5-0.9)
    staleness_a: float = 0.5  # polynomial (1 + tau) ** -a: stale deltas count less
    max_staleness: int = 60  # beyond this an update is rejected as STALE
    fedbuff_k: int = 5  # FedBuff buffer: small, so a 20-device fleet steps often
    fedavg_round_size: int = 10  # FedAvg cohort: half the fleet closes a round
    fedavg_deadline_s: float = 10.0  # ... or the deadline, with whatever arrived
    # Offers are the downlink's bill (each goes to every device). Measured on 20 devices, seeds
    # 0-1: every 5 versions reached 90% as fast as every 2 (9.7-18 s vs 13-18 s, noise of a
    # shared 2-core box) with ~2.5x less downlink (21-34 MB vs 53-74 MB).
    publish_every_versions: int = 5
    publish_every_seconds: float = 1.0
    publish_codec: str = "float16"  # half the downlink; the devices' deltas carry the precision
    publish_delta_codec: str = "int4"  # new versions as deltas (server/downlink.py); "none": off
    # --secure-aggregation: a cohort is one FedBuff buffer of fedbuff_k devices; a demo round
    # trains in 1-3 s, so the phases wait seconds, not the minutes a real fleet would use
    secagg_min_size: int = 3
    secagg_join_timeout_s: float = 3.0
    secagg_phase_timeout_s: float = 10.0
    # the published model's average (server/serving.py); None: server.recommended's decay
    # with --strategy auto, else 0.95 (~20 versions)
    serving_decay: float | None = None
    # "auto": server.recommended's measured FedBuff settings for this many concurrent devices
    recommended_concurrency: int = 20


def _strategy(name: str, t: ServerTuning) -> dict[str, Any]:
    if name == "auto":
        return recommended_strategy(t.recommended_concurrency).strategy
    staleness = {"function": "polynomial", "a": t.staleness_a}
    if name == "fedasync":
        return {"name": name, "alpha": t.fedasync_alpha, "staleness": staleness}
    if name == "fedbuff":
        return {"name": name, "buffer_size": t.fedbuff_k, "staleness": staleness}
    return {
        "name": name,
        "round_size": t.fedavg_round_size,
        "deadline_s": t.fedavg_deadline_s,
        "min_updates": 1,
    }


def _serving_decay(name: str, t: ServerTuning) -> float:
    if t.serving_decay is not None:
        return t.serving_decay
    if name == "auto":
        return recommended_strategy(t.recommended_concurrency).serving_decay
    return 0.95


def _robust(defence: str) -> dict[str, Any]:
    """The `[strategy.robust]` table of a named preset (server/robust/presets.py); what DP
    allows of it the server decides (server/strategies: make_strategy)."""
    config = DEFENCES[defence]
    if config is None:
        return {"enabled": False}
    return config.to_mapping()


def server_config_doc(
    setup: FleetSetup,
    broker_url: str,
    tuning: ServerTuning,
    embedded: bool,
    broker_extra: Mapping[str, Any],
    privacy: Mapping[str, Any] | None = None,
    secure: bool = False,
) -> dict[str, Any]:
    """What a user would write in server.toml for this demo run."""
    broker: dict[str, Any] = {
        "url": broker_url,
        "client_id": f"fleetlearn-server-{setup.fleet}",
        "protocol": "v311" if embedded else "auto",
        "keepalive": 10,
    }
    broker.update({k: str(v) for k, v in broker_extra.items() if v is not None})
    doc: dict[str, Any] = {
        "fleet": setup.fleet,
        "artifacts": str(setup.artifacts_dir),
        "signing_key": str(setup.run_dir / "keys" / "fleet.key"),
        "state_dir": str(setup.run_dir / "server"),
        "test_data": str(setup.test_file),
        "broker": broker,
        "strategy": _strategy(setup.strategy, tuning) | {"robust": _robust(setup.defence)},
        "admission": {"max_staleness": tuning.max_staleness},
        "serving": {"decay": _serving_decay(setup.strategy, tuning)},
        "publish": {
            "every_versions": tuning.publish_every_versions,
            "every_seconds": tuning.publish_every_seconds,
            "codec": tuning.publish_codec,
            "delta_codec": tuning.publish_delta_codec,
        },
        # fsync per group of updates: every update is still durable before its Ack.
        "durability": {"fsync": "batch"},
        "secure_aggregation": {
            "enabled": secure,
            "cohort_size": tuning.fedbuff_k,
            "min_size": min(tuning.secagg_min_size, tuning.fedbuff_k),
            "join_timeout_s": tuning.secagg_join_timeout_s,
            "phase_timeout_s": tuning.secagg_phase_timeout_s,
            "enrolment_key": str(setup.run_dir / "keys" / "enrolment.pub"),
        },
    }
    if privacy:
        doc["privacy"] = dict(privacy)
    return doc


class DemoServer:
    """Implements fleet.demo.parts.ServerHandle over a running ServerApp."""

    def __init__(self, app: ServerApp, console: ConsoleServer | None = None) -> None:
        self.app = app
        self.console = console
        self._evals: list[Evaluation] = []
        self._lock = threading.Lock()

    def version(self) -> int:
        return self.app.status().version

    def evaluations(self) -> list[Evaluation]:
        # The server keeps its latest evaluation; the demo keeps the history it saw. Accuracy is
        # the serving model's (the one published for inference), the iterate's kept beside it.
        status = self.app.status()
        last, served = status.last_eval, status.last_serving_eval or status.last_eval
        with self._lock:
            if (
                last is not None
                and served is not None
                and (not self._evals or last.version > self._evals[-1].version)
            ):
                self._evals.append(
                    Evaluation(last.version, served.accuracy, served.macro_f1, last.accuracy)
                )
            return list(self._evals)

    def accepted(self) -> int:
        return self.app.status().counts.get("accepted", 0)

    def rejected(self) -> Mapping[str, int]:
        counts = self.app.status().counts
        return {k: v for k, v in counts.items() if k != "accepted" and v}

    def privacy(self) -> Mapping[str, float] | None:
        status = self.app.status().privacy
        return None if status is None else status.offer_fields()

    def stop(self) -> None:
        if self.console is not None:
            self.console.stop()
        self.app.stop()
        if self.app.error is not None:
            _log.error("the server worker had failed: %s", self.app.error)


def start_server(
    setup: FleetSetup,
    broker_url: str,
    tuning: ServerTuning,
    embedded: bool,
    broker_extra: Mapping[str, Any],
    privacy: Mapping[str, Any] | None = None,
    *,
    secure: bool = False,
    console: str | None = None,
    metrics: str | None = None,
) -> DemoServer:
    doc = server_config_doc(setup, broker_url, tuning, embedded, broker_extra, privacy, secure)
    if metrics is not None:
        host, port = parse_listen(metrics)
        doc["metrics"] = {"address": host, "port": port}
    app = ServerApp(parse_config(doc, setup.run_dir))
    web = None
    if console is not None:  # loopback only: the demo has no certificate for the console
        web = attach(app, ListenConfig(*parse_listen(console)))
    app.start()
    return DemoServer(app, web)
