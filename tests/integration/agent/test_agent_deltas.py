"""Downlink deltas end to end: the real server publishing through a real Mosquitto to a real agent
process training with ONNX Runtime. The agent takes new versions as deltas, holds exactly the
bits of the server's signed whole offer of the same version, and persists them."""

from __future__ import annotations

import json
import queue
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.artifacts import load_artifacts
from protocol.downlink import decode_delta, weights_digest
from protocol.messages import decode_offer, decode_vector
from protocol.signing import private_key_to_pem
from protocol.topics import global_model_topic, model_delta_topic, update_topic
from server.app import ServerApp
from server.config import parse_config
from tests.integration.agent.harness import FLEET, start_agent, stop, write_agent_files
from tests.support.artifacts import digits_arrays, exported_artifacts
from tests.support.mosquitto import running_mosquitto
from tests.unit.server.factory import update_bytes
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


def _server(tmp_path: Path, port: int, artifacts: Path, key: Ed25519PrivateKey) -> ServerApp:
    (tmp_path / "fleet.key").write_bytes(private_key_to_pem(key))
    config = parse_config(
        {
            "fleet": FLEET,
            "artifacts": str(artifacts),
            "signing_key": "fleet.key",
            "state_dir": "server",
            "broker": {"url": f"mqtt://127.0.0.1:{port}", "client_id": "srv"},
            "strategy": {"name": "fedasync", "alpha": 0.5},
            "publish": {"every_versions": 1, "min_interval_seconds": 0},  # int4 deltas
        },
        tmp_path,
    )
    return ServerApp(config)


def test_a_real_agent_follows_the_servers_deltas(tmp_path: Path) -> None:
    artifacts = exported_artifacts()
    manifest = load_artifacts(artifacts).manifest
    x, y, _, _ = digits_arrays()
    with running_mosquitto(tmp_path / "broker") as broker:
        assert broker.port is not None
        config, key = write_agent_files(tmp_path, broker.port, artifacts, x[:400], y[:400])
        spy = _spy(broker.port, manifest.model_id)
        app = _server(tmp_path, broker.port, artifacts, key)
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


def test_a_restarted_agent_that_missed_versions_takes_the_whole_offer(tmp_path: Path) -> None:
    """The agent holds v2 on disk; while it is away another device moves the server on; back,
    the retained delta does not apply to v2, so it takes the retained whole offer."""
    artifacts = exported_artifacts()
    manifest = load_artifacts(artifacts).manifest
    x, y, _, _ = digits_arrays()
    with running_mosquitto(tmp_path / "broker") as broker:
        assert broker.port is not None
        config, key = write_agent_files(tmp_path, broker.port, artifacts, x[:400], y[:400])
        app = _server(tmp_path, broker.port, artifacts, key)
        app.start()
        other = MqttLink(BrokerConfig(url=f"mqtt://127.0.0.1:{broker.port}", client_id="dev-2"))
        other.start()
        try:
            first = tmp_path / "first.json"
            out = stop_after(start_agent(config, "--max-rounds", "2", "--report", str(first)))
            held = json.loads((tmp_path / "state" / "held_model.json").read_text())["version"]
            assert held >= 1 and json.loads(first.read_text())["model_version"] == held, out
            assert other.wait_connected(10)
            version = app.status().version
            rng = np.random.default_rng(0)
            for seq in (1, 2, 3):  # three more versions while the agent is away
                step = rng.normal(0, 0.01, manifest.num_params).astype(np.float32)
                payload = update_bytes(manifest, step, device="dev-2", seq=seq, base=version)
                other.publish(update_topic(FLEET, "dev-2"), payload, 1, False).wait(10)
                version += 1
                assert app.wait_for_version(version, timeout=30)
            second = tmp_path / "second.json"
            out = stop_after(start_agent(config, "--max-rounds", "1", "--report", str(second)))
        finally:
            other.stop()
            app.stop()
    summary = json.loads(second.read_text())
    assert summary["model_version"] >= held + 3, out[-3000:]  # caught up
    assert "does not apply" in out and "subscribing to whole offers" in out, out[-3000:]
    assert summary["deltas_refused"] == 0  # not an attack: a missed version


def stop_after(agent: subprocess.Popen[bytes]) -> str:
    try:
        agent.wait(180)
    finally:
        out = stop(agent)
    return out
