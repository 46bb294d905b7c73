"""Two aggregators in one MQTT v5 shared-subscription group on the production config: the update
stream is split between them, each update reaching exactly one member.

Each aggregator has its own identity (certificate CN and ACL server rights): the production
config sets `use_username_as_clientid`, so two instances under one username would share a client
id and Mosquitto would disconnect one of them on every connect of the other.
"""

from __future__ import annotations

import queue
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

from protocol import topics
from protocol.messages import Ack, decode_ack
from server.app import ServerApp
from server.config import parse_config
from tests.integration.broker.helpers import collect, link
from tests.support.mosquitto import MosquittoHandle, running_mosquitto
from tests.unit.server.factory import make_artifacts, update_bytes, write_key
from transport import IncomingMessage

pytestmark = pytest.mark.integration

FLEET = "test"
GROUP = "aggregators"
SERVERS = ["fleet-server", "fleet-server-2"]
DEVICES = ["dev-a", "dev-b", "dev-c", "dev-d"]
UPDATES_EACH = 6


def test_two_group_members_split_the_updates_each_exactly_once(tmp_path: Path) -> None:
    shared = topics.shared_update_subscription(FLEET, GROUP)
    with (
        running_mosquitto(
            tmp_path, "prod", fleet=FLEET, devices=DEVICES, server_users=SERVERS
        ) as broker,
        link(broker.server_config(SERVERS[0]), shared) as one,
        link(broker.server_config(SERVERS[1]), shared) as two,
    ):
        assert one.protocol == two.protocol == "5"
        started = time.monotonic()
        sent: set[tuple[str, bytes]] = set()
        for name in DEVICES:
            with link(broker.client_config(name)) as dev:
                for seq in range(UPDATES_EACH):
                    topic, payload = topics.update_topic(FLEET, name), f"{name}:{seq}".encode()
                    assert dev.publish(topic, payload).wait(5)
                    sent.add((topic, payload))
        got_one = [(m.topic, m.payload) for m in collect(one.incoming(), quiet=1.0)]
        got_two = [(m.topic, m.payload) for m in collect(two.incoming(), quiet=0.2)]
        elapsed = time.monotonic() - started
    print(f"\n{len(sent)} updates split {len(got_one)} / {len(got_two)} in {elapsed:.1f} s")
    assert len(sent) == len(DEVICES) * UPDATES_EACH
    assert len(got_one) + len(got_two) == len(sent)  # no duplicate anywhere ...
    assert set(got_one).isdisjoint(got_two)  # ... each update to exactly one member ...
    assert set(got_one) | set(got_two) == sent  # ... and none lost
    assert got_one and got_two  # both members carried load


def _server_doc(broker: MosquittoHandle, name: str, key: Path) -> dict[str, object]:
    cfg = broker.server_config(name)
    return {
        "fleet": FLEET,
        "artifacts": "artifacts",
        "signing_key": str(key),
        "state_dir": f"state-{name}",
        # version stays 0: a fixed base; each device sends several updates into that one buffer,
        # which the default robust option (one update per device per buffer) would refuse
        "strategy": {"name": "fedbuff", "buffer_size": 100, "robust": {"one_per_device": False}},
        "broker": {
            "url": cfg.url,
            "client_id": name,
            "ca_file": str(cfg.ca_file),
            "cert_file": str(cfg.cert_file),
            "key_file": str(cfg.key_file),
            "protocol": "v5",
            "shared_group": GROUP,
        },
    }


def _acks(q: queue.Queue[IncomingMessage], want: int, timeout: float) -> list[Ack]:
    """`want` acks, then anything more that comes within 0.5 s (a duplicate would)."""
    out: list[Ack] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        try:
            msg = q.get(timeout=0.1)
        except queue.Empty:
            continue
        if topics.parse_device_topic(msg.topic).kind is topics.DeviceTopicKind.ACK:
            out.append(decode_ack(msg.payload))
    out += [decode_ack(m.payload) for m in collect(q, quiet=0.5) if m.topic.endswith("/ack")]
    return out


def test_two_server_instances_with_shared_group_each_apply_part_and_ack_all_once(
    tmp_path: Path,
) -> None:
    manifest = make_artifacts(tmp_path / "artifacts", 6)
    key, _ = write_key(tmp_path)
    with running_mosquitto(
        tmp_path / "mq", "prod", fleet=FLEET, devices=DEVICES, server_users=SERVERS
    ) as broker:
        apps = [ServerApp(parse_config(_server_doc(broker, n, key), tmp_path)) for n in SERVERS]
        for app in apps:
            app.start()
        stack = ExitStack()
        try:
            devices = [
                stack.enter_context(link(broker.client_config(n), topics.ack_topic(FLEET, n)))
                for n in DEVICES
            ]
            time.sleep(0.3)  # both servers' shared SUBSCRIBEs are in before devices publish
            started = time.monotonic()
            for name, dev in zip(DEVICES, devices, strict=True):
                for seq in range(1, UPDATES_EACH + 1):
                    data = update_bytes(manifest, np.full(6, 0.1, np.float32), device=name, seq=seq)
                    assert dev.publish(topics.update_topic(FLEET, name), data).wait(5)
            acks = {
                name: _acks(dev.incoming(), UPDATES_EACH, 10)
                for name, dev in zip(DEVICES, devices, strict=True)
            }
            elapsed = time.monotonic() - started
            counts = [app.status().counts.get("accepted", 0) for app in apps]
        except BaseException:
            print(broker.log_text()[-4000:])
            raise
        finally:
            stack.close()
            for app in apps:
                app.stop()
    print(f"\nservers accepted {counts} of {len(DEVICES) * UPDATES_EACH} in {elapsed:.1f} s")
    for name, got in acks.items():  # one accepted ack per update: applied by exactly one server
        assert sorted(a.seq for a in got) == list(range(1, UPDATES_EACH + 1)), name
        assert all(a.accepted and a.device_id == name for a in got), got
    assert sum(counts) == len(DEVICES) * UPDATES_EACH
    assert all(c > 0 for c in counts), counts
