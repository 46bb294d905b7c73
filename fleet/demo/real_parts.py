"""The real broker, server and agents behind fleet.demo.parts' protocols.

Agents run as threads of the demo process (each its own MQTT client id, data folder, state folder
and ONNX Runtime session with one intra-op thread): on a 2-core machine 20 threads cost one
interpreter and one copy of ORT, where 20 processes would each load ORT (~80 MB) and start for
seconds. ORT releases the GIL while it computes, and a demo device spends most of its time in its
simulated step delay, so threads do not serialise the fleet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.artifacts import Artifacts, load_artifacts
from agent.config import parse_config
from agent.data import load_device_data
from agent.runtime import AgentRuntime, offline_status
from agent.secagg_identity import load_identity
from agent.trainer import load_trainer
from fleet.demo.conditions import SimulatedConditions
from fleet.demo.device import DemoDevice, DemoLink, MqttLinkLike, SlowTrainer
from fleet.demo.hostile import HostileTrainer
from fleet.demo.parts import BrokerHandle, FleetSetup
from fleet.embedded_broker import EmbeddedBroker
from fleetlearn.provision_identity import enrolment, write_device_identity
from protocol.signing import load_public_key
from protocol.topics import ack_topic, secagg_up_topic, status_topic, update_topic
from transport import BrokerConfig, MqttLink

__all__ = ["AgentTuning", "ExternalBroker", "RealAgents", "start_broker"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentTuning:
    """How demo agents train. Sized so a 20-device digits fleet passes 90% in about a minute."""

    epochs: int = 2  # local epochs per round over the device's ~60 samples
    batch_size: int = 16
    step_delay_s: float = 0.02  # a Pi-class board's step; slow boards multiply it by 5-10
    check_interval_s: float = 0.2  # how soon an idle agent notices a change of conditions
    ack_timeout_s: float = 10.0
    keepalive: int = 10  # seconds; a dead link is noticed in ~15 s


@dataclass(frozen=True)
class ExternalBroker:
    url: str
    port: int | None = None  # not ours: nothing to free

    def stop(self) -> None:
        return None


class _Embedded:
    def __init__(self) -> None:
        self._broker = EmbeddedBroker()
        self._broker.start()

    @property
    def url(self) -> str:
        return self._broker.url

    @property
    def port(self) -> int | None:
        return self._broker.port

    def stop(self) -> None:
        self._broker.stop()


def start_broker(url: str | None) -> BrokerHandle:
    """The embedded amqtt broker on a free 127.0.0.1 port, or an external one by URL."""
    return ExternalBroker(url) if url else _Embedded()


class RealAgents:
    """Builds real agent runtimes for a run; caches what all devices share."""

    def __init__(
        self,
        tuning: AgentTuning,
        embedded: bool,
        broker_extra: dict[str, Any],
        secure: bool = False,
    ) -> None:
        self.secure = secure  # --secure-aggregation
        self.tuning = tuning
        self.embedded = embedded
        self.broker_extra = broker_extra  # e.g. username/password/ca_file for --broker
        self._artifacts: Artifacts | None = None

    def _shared(self, setup: FleetSetup) -> Artifacts:
        if self._artifacts is None or self._artifacts.dir != setup.artifacts_dir:
            self._artifacts = load_artifacts(setup.artifacts_dir)
        return self._artifacts

    def start_agent(self, setup: FleetSetup, index: int, broker_url: str) -> DemoDevice:
        artifacts = self._shared(setup)
        life = setup.lives[index]
        device_id = life.device_id
        state_dir = setup.run_dir / "agents" / device_id
        t = self.tuning
        protocol = "v311" if self.embedded else "auto"  # amqtt speaks 3.1.1 only: skip the probe
        doc = {
            "device_id": device_id,
            "fleet": setup.fleet,
            "model_id": artifacts.manifest.model_id,
            "data_dir": str(setup.device_folders[index]),
            "artifacts_dir": str(setup.artifacts_dir),
            "state_dir": str(state_dir),
            "fleet_public_key": str(setup.run_dir / "keys" / "fleet.pub"),
            "broker": {"url": broker_url, "protocol": protocol, "keepalive": t.keepalive},
            "training": {
                "epochs": t.epochs,
                "batch_size": t.batch_size,
                "codec": setup.codec,
                "min_retrain_interval_s": 3600.0,  # retrain only on a newer global model
                "check_interval_s": t.check_interval_s,
                "ack_timeout_s": t.ack_timeout_s,
                "status_interval_s": 30.0,
            },
            "personal": {"enabled": False},
            "secure_aggregation": {"enabled": self.secure, "cohort_timeout_s": 30.0},
        }
        identity = None
        if self.secure:  # enrolled like a real device: identity files beside its state
            keys = setup.run_dir / "keys"
            paths = write_device_identity(
                enrolment(keys, setup.fleet), device_id, state_dir / "identity"
            )
            names = ("identity_key", "identity_cert", "enrolment_key")
            secure: dict[str, Any] = {"enabled": True, "cohort_timeout_s": 30.0}
            doc["secure_aggregation"] = secure | {
                k: str(p) for k, p in zip(names, paths, strict=True)
            }
        config = parse_config(doc, setup.run_dir)
        if self.secure:
            identity = load_identity(config.secure_aggregation, config.fleet, device_id)
        data = load_device_data(Path(config.data_dir), artifacts.manifest, artifacts.dir)
        inner = load_trainer(setup.artifacts_dir, threads=1)
        if setup.attack is not None and index in setup.attackers:
            inner = HostileTrainer(inner, setup.attack, index)  # fleet/demo/hostile.py
        trainer = SlowTrainer(inner, t.step_delay_s * life.slowdown)
        conditions = SimulatedConditions(life, setup.start)
        will = (status_topic(setup.fleet, device_id), offline_status(device_id), True)
        broker_cfg = BrokerConfig(
            url=broker_url,
            client_id=device_id,
            keepalive=t.keepalive,
            protocol=protocol,
            backoff_initial=0.2,
            backoff_max=2.0,  # a demo device returning from a dropout should rejoin quickly
            **self.broker_extra,
        )

        def make_link() -> MqttLinkLike:
            return MqttLink(broker_cfg, will=will)

        link = DemoLink(
            make_link,
            update_topic(setup.fleet, device_id),
            ack_topic(setup.fleet, device_id),
            secagg_up_topic(setup.fleet, device_id) if self.secure else "",
        )
        runtime = AgentRuntime(
            config,
            artifacts.manifest,
            link=link,
            trainer=trainer,
            train_x=data.train_x,
            train_y=data.train_y,
            test_x=data.test_x,
            test_y=data.test_y,
            conditions=conditions,
            fleet_key=load_public_key(config.fleet_public_key.read_bytes()),
            identity=identity,
        )
        device = DemoDevice(runtime, link, conditions)
        device.start()
        return device
