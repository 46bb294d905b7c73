"""The server over real MQTT (embedded amqtt broker), with real exported artifacts, real ORT
training on digits for the update, signed retained offers, and ONNX Runtime evaluation."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import numpy as np
import pytest

from agent.trainer import TrainConfig, load_trainer
from fleet.embedded_broker import EmbeddedBroker
from protocol.errors import Reason
from protocol.manifest import decode_manifest
from protocol.messages import ClientUpdate, decode_ack, decode_offer, encode_update, encode_vector
from protocol.signing import load_private_key, verify_offer
from protocol.topics import ack_topic, global_model_topic, update_topic
from server.app import ServerApp
from server.config import parse_config
from tests.support.artifacts import digits_arrays, exported_artifacts
from tests.unit.server.factory import write_key
from transport import BrokerConfig, IncomingMessage, MqttLink

pytestmark = pytest.mark.integration
FLEET = "itest"


def _next(q: queue.Queue[IncomingMessage], topic: str, timeout: float = 20.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        msg = q.get(timeout=max(0.01, deadline - time.monotonic()))
        if msg.topic == topic:
            return msg.payload


def test_update_over_mqtt_is_acked_published_and_evaluated(tmp_path: Path) -> None:
    artifacts = exported_artifacts("mlp", (64,), 10)
    manifest = decode_manifest((artifacts / "manifest.json").read_bytes())
    x_train, y_train, x_test, y_test = digits_arrays((64,))
    np.savez(tmp_path / "test.npz", x=x_test, y=y_test)
    key, _ = write_key(tmp_path)
    public = load_private_key(key.read_bytes()).public_key()

    with EmbeddedBroker() as broker:
        config = parse_config(
            {
                "fleet": FLEET,
                "artifacts": str(artifacts),
                "signing_key": str(key),
                "state_dir": "state",
                "test_data": "test.npz",
                "broker": {"url": broker.url, "client_id": "srv", "protocol": "v311"},
                "strategy": {"name": "fedasync", "alpha": 1.0, "robust": {"enabled": False}},
                "publish": {"every_versions": 1, "codec": "float16"},
            },
            tmp_path,
        )
        app = ServerApp(config)
        app.start()
        device = MqttLink(BrokerConfig(url=broker.url, client_id="dev-1", protocol="v311"))
        device.start()
        try:
            assert device.wait_connected(10)
            device.subscribe(global_model_topic(FLEET, manifest.model_id), 1)
            device.subscribe(ack_topic(FLEET, "dev-1"), 1)
            inbox = device.incoming()
            offer = decode_offer(_next(inbox, global_model_topic(FLEET, manifest.model_id)))
            verify_offer(offer, public)
            assert offer.version == 0
            before = app.last_eval
            assert before is not None and before.version == 0 and before.accuracy < 0.5

            trainer = load_trainer(artifacts)
            base = trainer.get_weights()
            trainer.set_weights(base)
            result = trainer.train(x_train, y_train, TrainConfig(epochs=5, batch_size=32))
            delta = result.weights - base
            update = ClientUpdate(
                manifest.model_id,
                0,
                "dev-1",
                1,
                len(y_train),
                result.steps,
                encode_vector(delta, {"name": "int8"}),
                {},
            )
            device.publish(update_topic(FLEET, "dev-1"), encode_update(update), qos=1)
            ack = decode_ack(_next(inbox, ack_topic(FLEET, "dev-1")))
            assert ack.accepted and ack.reason is Reason.OK and ack.server_version == 1

            offer1 = decode_offer(_next(inbox, global_model_topic(FLEET, manifest.model_id)))
            verify_offer(offer1, public)
            assert offer1.version == 1 and offer1.weights.codec["name"] == "float16"
            deadline = time.monotonic() + 20
            while (
                app.last_eval is None or app.last_eval.version < 1
            ) and time.monotonic() < deadline:
                time.sleep(0.05)
            after = app.last_eval
            assert after is not None and after.version == 1
            assert after.accuracy > 0.85 and after.loss < before.loss
            assert 0.8 < after.macro_f1 <= 1.0

            # a replay of the same seq with other content is refused with its reason
            replay = ClientUpdate(
                manifest.model_id,
                1,
                "dev-1",
                1,
                5,
                1,
                encode_vector(np.zeros_like(delta), {"name": "int8"}),
                {},
            )
            device.publish(update_topic(FLEET, "dev-1"), encode_update(replay), qos=1)
            nack = decode_ack(_next(inbox, ack_topic(FLEET, "dev-1")))
            assert not nack.accepted and nack.reason is Reason.REPLAY
        finally:
            device.stop()
            app.stop()


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    artifacts = exported_artifacts("mlp", (64,), 10)
    manifest = decode_manifest((artifacts / "manifest.json").read_bytes())
    key, _ = write_key(tmp_path)
    with EmbeddedBroker() as broker:
        (tmp_path / "server.toml").write_text(
            f'fleet = "{FLEET}"\nartifacts = "{artifacts}"\nsigning_key = "{key}"\n'
            f'state_dir = "state"\n[broker]\nurl = "{broker.url}"\nprotocol = "v311"\n'
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetlearn",
                "server",
                "--config",
                str(tmp_path / "server.toml"),
            ],
            cwd=root,
            env=dict(os.environ, PYTHONPATH=str(root)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        device = MqttLink(BrokerConfig(url=broker.url, client_id="watcher", protocol="v311"))
        device.start()
        try:
            device.subscribe(global_model_topic(FLEET, manifest.model_id), 1)
            offer = decode_offer(
                _next(device.incoming(), global_model_topic(FLEET, manifest.model_id))
            )
            assert offer.version == 0
        finally:
            device.stop()
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "server up" in out
