"""Downlink deltas end to end: the real server publishing through a real Mosquitto to a real agent
process training with ONNX Runtime. The agent takes new versions as deltas, holds exactly the
bits of the server's signed whole offer of the same version, and persists them."""

from __future__ import annotations

import json
import queue
from pathlib import Path

import numpy as np
import pytest

from agent.artifacts import load_artifacts
from protocol.downlink import decode_delta, weights_digest
from protocol.messages import decode_offer, decode_vector
from protocol.signing import private_key_to_pem
from protocol.topics import global_model_topic, model_delta_topic
from server.app import ServerApp
from server.config import parse_config
from tests.integration.agent.harness import FLEET, start_agent, stop, write_agent_files
from tests.support.artifacts import digits_arrays, exported_artifacts
from tests.support.mosquitto import running_mosquitto
from transport import BrokerConfig, MqttLink

pytestmark = pytest.mark.integration
ROUNDS = 5


def _spy(port: int, model_id: str) -> MqttLink:
    """Another subscriber that records every whole offer and delta the server publishes."""
    link = MqttLink(BrokerConfig(url=f"mqtt://127.0.0.1:{port}", client_id="spy"))
    link.subscribe(global_model_topic(FLEET, model_id), 0)
    link.subscribe(model_delta_topic(FLEET, model_id), 0)
    link.start()
    assert link.wait_connected(10)
    return link


def test_a_real_agent_follows_the_servers_deltas(tmp_path: Path) -> None:
    artifacts = exported_artifacts()
    manifest = load_artifacts(artifacts).manifest
    x, y, _, _ = digits_arrays()
    with running_mosquitto(tmp_path / "broker") as broker:
        assert broker.port is not None
        config, key = write_agent_files(tmp_path, broker.port, artifacts, x[:400], y[:400])
        (tmp_path / "fleet.key").write_bytes(private_key_to_pem(key))
        server_config = parse_config(
            {
                "fleet": FLEET,
                "artifacts": str(artifacts),
                "signing_key": "fleet.key",
                "state_dir": "server",
                "broker": {"url": f"mqtt://127.0.0.1:{broker.port}", "client_id": "srv"},
                "strategy": {"name": "fedasync", "alpha": 0.5},
                "publish": {"every_versions": 1, "min_interval_seconds": 0},  # int4 deltas
            },
            tmp_path,
        )
        spy = _spy(broker.port, manifest.model_id)
        app = ServerApp(server_config)
        app.start()
        report = tmp_path / "report.json"
        agent = start_agent(config, "--max-rounds", str(ROUNDS), "--report", str(report))
        try:
            agent.wait(180)
        finally:
            out = stop(agent)
            app.stop()
        offers, deltas = {}, {}
        while True:
            try:
                msg = spy.incoming().get(timeout=1.0)
            except queue.Empty:
                break
            if msg.topic.endswith("/global"):
                offer = decode_offer(msg.payload)
                offers[offer.version] = decode_vector(offer.weights, manifest)
            elif msg.payload:
                delta = decode_delta(msg.payload)
                deltas[delta.version] = delta
        spy.stop()
    summary = json.loads(report.read_text())
    assert summary["rounds"] == ROUNDS, out[-3000:]
    # v0 went whole; every later version went both ways, and the agent took deltas
    assert sorted(deltas) == list(range(1, max(offers) + 1)), sorted(offers)
    assert summary["deltas_applied"] >= ROUNDS - 2 and summary["deltas_refused"] == 0, out[-3000:]
    assert "leaving whole offers" in out
    held = json.loads((tmp_path / "state" / "held_model.json").read_text())
    weights = np.load(tmp_path / "state" / "held_model.npy", allow_pickle=False)
    version = held["version"]
    assert version == summary["model_version"] >= ROUNDS - 1
    # bit for bit the signed whole offer of the same version, and the delta's signed digest
    assert weights.tobytes() == offers[version].tobytes()
    assert weights_digest(weights) == held["digest"] == deltas[version].result_digest
    assert app.status().counts.get("accepted") == ROUNDS
