"""One enrolled device floods its own update and status topics; the server stays up and keeps
acknowledging an honest device (the outside probe's critical finding, against the production
Mosquitto config: TLS, client certificates, ACL).

The flood is 75,000 seven-byte messages at QoS 0 from a raw paho client, as fast as it can send.
Before the fix each one became a QoS 1 publish from the server (a refusal Ack, or a clear of an
invalid status); paho ran out of its 65,535 message ids and the server stopped ("server worker
failed"). Now the honest device's updates sent during the flood are acknowledged, none is lost
(the version and the sequence table match the Acks, also after a restart), and the worker runs.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protocol.messages import decode_ack
from protocol.topics import ack_topic, status_topic, update_topic
from server.app import ServerApp
from server.config import ServerConfig, parse_config
from tests.support.mosquitto import MosquittoHandle, running_mosquitto
from tests.unit.server.factory import make_artifacts, update_bytes, write_key
from tests.unit.server.test_app import FakeLink
from transport import IncomingMessage, MqttLink

pytestmark = pytest.mark.integration
FLEET = "test"
UPDATE_FLOOD = 50_000
STATUS_FLOOD = 25_000  # with the update flood: 75,000 > 65,535 message ids before the fix
GARBAGE = b"\x00garbag"


# The flooding device runs in its own process, as it would in the field (and so it does not
# share the server's GIL): a raw paho client, QoS 0, as fast as it can write.
_FLOOD = """
import sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, ca, cert, key, device, updates, statuses, n_updates, n_statuses = sys.argv[1:]
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv311)
client.tls_set(ca, cert, key)
client.connect("127.0.0.1", int(port))
started = time.monotonic()
n_updates, n_statuses = int(n_updates), int(n_statuses)
for i in range(n_updates + n_statuses):
    client.publish(statuses if i % 3 == 2 and i // 3 < n_statuses else updates, GARBAGE, qos=0)
    if i % 64 == 0:
        client.loop(0)  # paho writes what it queued; nothing is read but PINGRESP
while client.want_write():
    client.loop(0.01)
print(f"flood: {n_updates + n_statuses} messages in {time.monotonic() - started:.1f} s")
client.disconnect()
""".replace("GARBAGE", repr(GARBAGE))


def _start_flood(broker: MosquittoHandle, device: str) -> subprocess.Popen[str]:
    cfg = broker.client_config(device)
    args = [
        str(broker.tls_port),
        str(cfg.ca_file),
        str(cfg.cert_file),
        str(cfg.key_file),
        device,
        update_topic(FLEET, device),
        status_topic(FLEET, device),
        str(UPDATE_FLOOD),
        str(STATUS_FLOOD),
    ]
    return subprocess.Popen(
        [sys.executable, "-c", _FLOOD, *args], stdout=subprocess.PIPE, text=True
    )


def _config(tmp: Path, key: Path) -> ServerConfig:
    doc: dict[str, Any] = {
        "fleet": FLEET,
        "artifacts": "artifacts",
        "signing_key": str(key),
        "state_dir": "state",
        "strategy": {"name": "fedasync", "alpha": 0.5},  # every accepted update is a version
    }
    return parse_config(doc, tmp)


def _refused(app: ServerApp) -> int:
    counts = app.status().counts
    return counts.get("rate_limited", 0) + counts.get("malformed", 0)


def test_one_device_flooding_its_topics_cannot_stop_the_server(tmp_path: Path) -> None:
    manifest = make_artifacts(tmp_path / "artifacts", 6)
    key, _ = write_key(tmp_path)
    devices = ["evil", "dev-a"]
    with running_mosquitto(tmp_path / "mq", "prod", fleet=FLEET, devices=devices) as broker:
        config = _config(tmp_path, key)
        server_link = MqttLink(broker.server_config())
        app = ServerApp(config, link=server_link)
        honest = MqttLink(broker.client_config("dev-a"))
        app.start()
        honest.start()
        acks: queue.Queue[IncomingMessage] = honest.incoming()
        latencies: list[float] = []
        accepted: list[int] = []
        flood: subprocess.Popen[str] | None = None

        def send_and_wait(seq: int) -> None:
            payload = update_bytes(
                manifest, np.full(6, 0.01, np.float32), device="dev-a", seq=seq, base=seq - 1
            )
            sent = time.monotonic()
            honest.publish(update_topic(FLEET, "dev-a"), payload, qos=1)
            while True:  # generous: the probe saw 5.3 s, the server's death in ~13 s
                message = acks.get(timeout=30)
                ack = decode_ack(message.payload)
                if ack.seq == seq:
                    break
            latencies.append(time.monotonic() - sent)
            assert ack.accepted, ack
            accepted.append(seq)

        try:
            assert server_link.wait_connected(10) and honest.wait_connected(10)
            honest.subscribe(ack_topic(FLEET, "dev-a"), 1)
            time.sleep(0.3)  # the SUBSCRIBE is in before the first Ack
            send_and_wait(1)
            flood = _start_flood(broker, "evil")
            flood_started = time.monotonic()
            seq = 2
            while flood.poll() is None:  # the honest device keeps working through the flood
                send_and_wait(seq)
                seq += 1
                time.sleep(0.2)
            out, _ = flood.communicate(timeout=60)
            print(out.strip())
            assert flood.returncode == 0
            deadline = time.monotonic() + 40
            while _refused(app) < UPDATE_FLOOD and time.monotonic() < deadline:
                time.sleep(0.05)  # the server reads and refuses what the broker delivers
            drained = time.monotonic() - flood_started
            print(f"the server had refused the whole flood {drained:.1f} s after it began")
            send_and_wait(seq)  # and after it
            counts = app.status().counts
            print(
                f"honest acks {len(latencies)}: max {max(latencies) * 1000:.0f} ms, "
                f"median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms; "
                f"counts {counts}; publish failures {app.metrics.publish_failures()}"
            )
            assert app.error is None
            assert _refused(app) == UPDATE_FLOOD  # every garbage update reached the server
            assert app.status().version == len(accepted) == seq
            assert app.core.sequences["dev-a"][0] == seq
            assert max(latencies) < 10.0
        except BaseException:
            print(broker.log_text()[-3000:])
            raise
        finally:
            if flood is not None and flood.poll() is None:
                flood.kill()  # by its pid: the process this test started
                flood.wait()
            honest.stop()
            app.stop()
    with ServerApp(config, link=FakeLink()) as again:  # nothing acknowledged was lost
        assert again.status().version == len(accepted)
        assert again.core.sequences["dev-a"][0] == accepted[-1]
