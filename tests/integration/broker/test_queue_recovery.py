"""The way out of the silent-drop trap: fleetlearn's agents keep every update in their outbox and
re-send it after `ack_timeout_s` until the server's Ack arrives, so updates Mosquitto dropped past
`max_queued_messages` while the aggregator was away still all end up acknowledged.

Real pieces: the production Mosquitto config (queue shrunk to QUEUE), the real ServerApp on a
persistent session, and real AgentRuntimes (outbox = agent.store.StateStore, re-send =
AgentRuntime._resend_if_due) on real MqttLinks with client certificates. Only the trainer is the
agent's own deterministic FakeTrainer: the training is not what is under test here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.conditions import FakeConditions
from agent.config import parse_config as parse_agent_config
from agent.runtime import AgentRuntime
from agent.trainer.fake import FakeTrainer
from fleetlearn.provision_acl import DEFAULT_SERVER_USER
from protocol.manifest import Manifest
from server.app import ServerApp
from server.config import ServerConfig
from server.config import parse_config as parse_server_config
from tests.support.mosquitto import MosquittoHandle, running_mosquitto
from tests.unit.server.factory import make_artifacts, write_key
from transport import MqttLink

pytestmark = pytest.mark.integration

FLEET = "test"
QUEUE = 2  # max_queued_messages for this test (production: 10,000)
DEVICES = [f"dev-{i}" for i in range(6)]  # one update each: 4 more than the queue holds
ACK_TIMEOUT = 2.0  # agent training.ack_timeout_s


def _server_config(tmp: Path, key: Path) -> ServerConfig:
    return parse_server_config(
        {
            "fleet": FLEET,
            "artifacts": "artifacts",
            "signing_key": str(key),
            "state_dir": "server-state",
            # a buffer larger than the fleet: the version stays 0, so no agent trains twice
            "strategy": {"name": "fedbuff", "buffer_size": 100},
        },
        tmp,
    )


def _agent(
    tmp: Path, broker: MosquittoHandle, name: str, manifest: Manifest, pub: Ed25519PublicKey
) -> tuple[AgentRuntime, MqttLink]:
    folder = tmp / name
    folder.mkdir()
    doc = {
        "device_id": name,
        "fleet": FLEET,
        "model_id": manifest.model_id,
        "data_dir": "data",  # unused: data, trainer and key are handed in below
        "artifacts_dir": "artifacts",
        "state_dir": "state",
        "fleet_public_key": "fleet.pub",
        "broker": {"url": broker.url("cert")},
        "training": {
            "steps": 3,
            "batch_size": 4,
            "check_interval_s": 0.02,
            "ack_timeout_s": ACK_TIMEOUT,
            "min_retrain_interval_s": 3600,
        },
    }
    link = MqttLink(broker.client_config(name))
    x = np.zeros((8, 3), np.float32)  # (samples, input 3) for the 6-parameter test model
    agent = AgentRuntime(
        parse_agent_config(doc, folder),
        manifest,
        link=link,
        trainer=FakeTrainer(manifest),
        train_x=x,
        train_y=np.zeros(8, np.int64),
        conditions=FakeConditions(),
        fleet_key=pub,
    )
    return agent, link


def _poll_until(agents: list[AgentRuntime], done: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not done within {timeout} s")
        for agent in agents:
            agent.poll(0.005)
    return time.monotonic() - started


def _poll_for(agents: list[AgentRuntime], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for agent in agents:
            agent.poll(0.005)


def test_outbox_resends_what_the_broker_dropped_until_every_update_is_acked(
    tmp_path: Path,
) -> None:
    manifest = make_artifacts(tmp_path / "artifacts", 6)
    key, pub = write_key(tmp_path)
    with running_mosquitto(
        tmp_path / "mq",
        "prod",
        fleet=FLEET,
        devices=DEVICES,
        extra_conf=f"max_queued_messages {QUEUE}\n",
    ) as broker:
        # 1. the server comes up once: retained offer v0 and its persistent update subscription
        first = ServerApp(_server_config(tmp_path, key), link=MqttLink(broker.server_config()))
        first.start()
        pairs = [_agent(tmp_path, broker, n, manifest, pub) for n in DEVICES]
        agents = [agent for agent, _ in pairs]
        try:
            for _, link in pairs:
                link.start()
            assert all(link.wait_connected(10) for _, link in pairs)
            time.sleep(0.3)  # SUBACKs (the server's too) before anyone publishes
            # 2. the server is away (a restart) while every agent trains and sends its update
            first.stop()
            started = time.monotonic()
            for agent in agents:
                agent.start()
            _poll_until(agents, lambda: all(a.bytes_published for a in agents), 10)
            _poll_for(agents, 0.5)  # PUBACKs settle, well before ACK_TIMEOUT
            one_send = [a.bytes_published for a in agents]  # bytes of one update, per agent
            assert all(len(a.store.pending_seqs()) == 1 for a in agents)
            assert f"Outgoing messages are being dropped for client {DEFAULT_SERVER_USER}" in (
                broker.log_text()
            )
            # 3. the server is back: it gets the QUEUE queued updates; the rest come as re-sends
            second = ServerApp(_server_config(tmp_path, key), link=MqttLink(broker.server_config()))
            second.start()
            try:
                _poll_until(agents, lambda: all(a.acked == 1 for a in agents), 3 * ACK_TIMEOUT + 5)
                recovered_s = time.monotonic() - started
                _poll_for(agents, 0.5)  # late duplicates, if any, would show in the counts
                counts = second.status().counts
            finally:
                second.stop()
        finally:
            for _, link in pairs:
                link.stop()
    sends = [a.bytes_published // size for a, size in zip(agents, one_send, strict=True)]
    print(
        f"\n{len(DEVICES)} updates, queue {QUEUE}: sends per agent {sends}; "
        f"all acked {recovered_s:.1f} s after the first send; server counts {counts}"
    )
    assert all(not a.store.pending_seqs() for a in agents)  # every outbox is empty
    assert counts["accepted"] == len(DEVICES)  # each update applied once
    assert sends.count(1) == QUEUE  # the queued ones needed no re-send ...
    assert sends.count(2) == len(DEVICES) - QUEUE  # ... the dropped ones exactly one
