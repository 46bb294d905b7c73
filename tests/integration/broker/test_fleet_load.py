"""200 devices' worth of MQTT connections through the production config: no QoS 1 update lost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from protocol import topics
from tests.integration.broker.helpers import collect, link
from tests.support.mosquitto import running_mosquitto
from transport import MqttLink

pytestmark = pytest.mark.integration

FLEET = "test"
DEVICES = 200
UPDATES_EACH = 10
PAYLOAD = 4096  # an int8 delta of a ~4k-parameter model; the count matters here, not the size


def test_200_devices_publish_qos1_updates_and_none_is_lost(tmp_path: Path) -> None:
    names = [f"dev-{i:03d}" for i in range(DEVICES)]
    with running_mosquitto(tmp_path, "prod", fleet=FLEET, password_devices=names) as broker:
        started = time.monotonic()
        with link(broker.server_config(), topics.update_subscription(FLEET)) as server:
            devices = [MqttLink(broker.client_config(n, listener="password")) for n in names]
            try:
                for dev in devices:
                    dev.start()
                assert all(dev.wait_connected(30) for dev in devices)
                connected_s = time.monotonic() - started
                handles = [
                    dev.publish(
                        topics.update_topic(FLEET, name),
                        seq.to_bytes(4, "big") + bytes(PAYLOAD),
                    )
                    for seq in range(UPDATES_EACH)
                    for name, dev in zip(names, devices, strict=True)
                ]
                assert all(h.wait(60) for h in handles)  # every PUBACK came back
                got = collect(server.incoming(), quiet=2.0, limit=60)
            finally:
                for dev in devices:
                    dev.stop()
        received = {(topics.parse_device_topic(m.topic).device_id, m.payload[:4]) for m in got}
        expected = {(n, s.to_bytes(4, "big")) for n in names for s in range(UPDATES_EACH)}
        assert len(got) == DEVICES * UPDATES_EACH  # no loss, no duplicate
        assert received == expected
        assert "being dropped" not in broker.log_text()
        print(
            f"\n{DEVICES} TLS connections in {connected_s:.1f} s; "
            f"{len(got)} updates in {time.monotonic() - started:.1f} s total"
        )
