"""The server against the production-like Mosquitto (TLS, client certificates, ACL): a device's
update is acked through the broker's ACL, and a payload naming another device is refused."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import numpy as np
import pytest

from protocol.errors import Reason
from protocol.messages import decode_ack, decode_offer
from protocol.topics import ack_topic, global_model_topic, update_topic
from server.app import ServerApp
from server.config import parse_config
from tests.support.mosquitto import running_mosquitto
from tests.unit.server.factory import make_artifacts, update_bytes, write_key
from transport import IncomingMessage, MqttLink

pytestmark = pytest.mark.integration
FLEET = "test"


def _next(q: queue.Queue[IncomingMessage], topic: str, timeout: float = 15.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        msg = q.get(timeout=max(0.01, deadline - time.monotonic()))
        if msg.topic == topic:
            return msg.payload


def test_server_behind_production_broker(tmp_path: Path) -> None:
    manifest = make_artifacts(tmp_path / "artifacts", 6)
    key, _ = write_key(tmp_path)
    with running_mosquitto(tmp_path / "mq", "prod", fleet=FLEET, devices=["dev-a"]) as broker:
        config = parse_config(
            {
                "fleet": FLEET,
                "artifacts": "artifacts",
                "signing_key": str(key),
                "state_dir": "state",
                "strategy": {"name": "fedasync", "alpha": 1.0},
            },
            tmp_path,
        )
        app = ServerApp(config, link=MqttLink(broker.server_config()))
        device = MqttLink(broker.client_config("dev-a"))
        app.start()
        device.start()
        try:
            assert device.wait_connected(10)
            device.subscribe(global_model_topic(FLEET, manifest.model_id), 1)
            device.subscribe(ack_topic(FLEET, "dev-a"), 1)
            inbox = device.incoming()
            assert (
                decode_offer(_next(inbox, global_model_topic(FLEET, manifest.model_id))).version
                == 0
            )
            payload = update_bytes(manifest, np.ones(6, np.float32), device="dev-a", seq=1)
            device.publish(update_topic(FLEET, "dev-a"), payload, qos=1)
            ack = decode_ack(_next(inbox, ack_topic(FLEET, "dev-a")))
            assert ack.accepted and ack.reason is Reason.OK and ack.server_version == 1
            # the ACL pins dev-a to its own topic (broker tests); a payload claiming dev-b on
            # that topic is refused by the server
            spoof = update_bytes(manifest, np.ones(6, np.float32), device="dev-b", seq=1)
            device.publish(update_topic(FLEET, "dev-a"), spoof, qos=1)
            nack = decode_ack(_next(inbox, ack_topic(FLEET, "dev-a")))
            assert not nack.accepted and nack.reason is Reason.DEVICE_MISMATCH
            time.sleep(0.5)
            assert app.status().version == 1 and app.status().counts["accepted"] == 1
        except BaseException:
            print(broker.log_text()[-3000:])
            raise
        finally:
            device.stop()
            app.stop()
