"""Regression tests for the outside probe's broker-level findings (issue 15, defects 1, 3 and 7),
on the committed production config (`broker-config/mosquitto.prod.conf`) and fleetlearn's own
provisioning, against a real Mosquitto.

1. A device could join the aggregators' `$share/<group>/...update` group: Mosquitto gave it a
   round-robin turn, the ACL denied it the message, and that update was silently lost. And a
   server switching its session to `shared_group` kept the old plain subscription (every update
   arrived twice).
3. Devices subscribed to offers at QoS 1 on persistent sessions: an offline device received
   every offer published while it was away (244 in the probe); and the server published one
   full offer per tiny update.
7. Retained messages on a device's update topic reached the server again at every restart;
   a device could park megabytes retained on its status topic.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protocol import topics
from protocol.messages import decode_ack, decode_offer
from server.app import ServerApp
from server.config import parse_config
from tests.integration.broker.helpers import collect, link
from tests.support.mosquitto import MosquittoHandle, running_mosquitto
from tests.unit.server.factory import make_artifacts, update_bytes, write_key
from transport import IncomingMessage

pytestmark = pytest.mark.integration

FLEET = "test"
GROUP = "aggregators"


def _updates_reaching_server(
    broker: MosquittoHandle, hostile_filters: list[str], protocol: str
) -> int:
    shared = topics.shared_update_subscription(FLEET, GROUP)
    with (
        link(broker.server_config(), shared) as server,
        link(broker.client_config("dev-a", protocol=protocol), *hostile_filters),
        link(broker.client_config("dev-b")) as honest,
    ):
        for seq in range(20):
            assert honest.publish(topics.update_topic(FLEET, "dev-b"), b"u%d" % seq).wait(5)
        return len(collect(server.incoming(), quiet=1.0))


@pytest.mark.parametrize("protocol", ["v5", "v311"])
def test_device_cannot_join_the_aggregators_shared_group(tmp_path: Path, protocol: str) -> None:
    with running_mosquitto(tmp_path, "prod", fleet=FLEET, devices=["dev-a", "dev-b"]) as broker:
        hostile = [
            topics.shared_update_subscription(FLEET, GROUP),
            f"$share/{GROUP}/#",
            f"$share/{GROUP}/fl/{FLEET}/device/dev-b/update",
        ]
        got = _updates_reaching_server(broker, hostile, protocol)
        if got != 20:
            print(broker.log_text()[-3000:])
    assert got == 20  # before the fix: 10 of 20 (the hostile member's turns were dropped)


def test_device_subscription_outside_its_own_topics_is_refused_at_subscribe(
    tmp_path: Path,
) -> None:
    """The broker says no at SUBSCRIBE time (v5 SUBACK 0x87), not only at delivery."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    with running_mosquitto(tmp_path, "prod", fleet=FLEET, devices=["dev-a"]) as broker:
        cfg = broker.client_config("dev-a")
        codes: queue.Queue[list[int]] = queue.Queue()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dev-a", protocol=mqtt.MQTTv5)
        client.tls_set(str(cfg.ca_file), str(cfg.cert_file), str(cfg.key_file))
        client.on_subscribe = lambda c, u, mid, rcs, p: codes.put([int(r.value) for r in rcs])
        client.connect("127.0.0.1", broker.tls_port or 0)
        client.loop_start()
        try:
            filters = [
                topics.shared_update_subscription(FLEET, GROUP),
                topics.ack_topic(FLEET, "dev-a"),
                topics.global_model_subscription(FLEET),
            ]
            client.subscribe([(f, 1) for f in filters])
            got = codes.get(timeout=10)
        finally:
            client.loop_stop()
            client.disconnect()
    assert got[0] == 0x87  # Not authorized
    assert got[1:] == [1, 1]  # its own ack topic and the offers: granted QoS 1


def _server_doc(mq: MosquittoHandle, key: Path, **extra: Any) -> dict[str, Any]:
    cfg = mq.server_config()
    doc: dict[str, Any] = {
        "fleet": FLEET,
        "artifacts": "artifacts",
        "signing_key": str(key),
        "state_dir": "state",
        "strategy": {"name": "fedbuff", "buffer_size": 100},  # version stays 0: a fixed base
        "broker": {
            "url": cfg.url,
            "client_id": "fleet-server",
            "ca_file": str(cfg.ca_file),
            "cert_file": str(cfg.cert_file),
            "key_file": str(cfg.key_file),
            "protocol": "v5",
        },
    }
    for table, values in extra.items():
        doc.setdefault(table, {}).update(values)
    return doc


def _acks(q: queue.Queue[IncomingMessage]) -> list[int]:
    return [decode_ack(m.payload).seq for m in collect(q, quiet=1.0) if m.topic.endswith("/ack")]


@pytest.mark.parametrize("first, then", [("", GROUP), (GROUP, "")])
def test_switching_subscription_mode_drops_the_old_subscription(
    tmp_path: Path, first: str, then: str
) -> None:
    manifest = make_artifacts(tmp_path / "artifacts", 6)
    key, _ = write_key(tmp_path)
    with running_mosquitto(tmp_path / "mq", "prod", fleet=FLEET, devices=["dev-a"]) as broker:
        with ServerApp(
            parse_config(_server_doc(broker, key, broker={"shared_group": first}), tmp_path)
        ):
            time.sleep(0.3)
        app = ServerApp(
            parse_config(_server_doc(broker, key, broker={"shared_group": then}), tmp_path)
        )
        with app, link(broker.client_config("dev-a"), topics.ack_topic(FLEET, "dev-a")) as dev:
            time.sleep(0.5)
            for seq in range(1, 6):
                data = update_bytes(manifest, np.full(6, 0.1, np.float32), device="dev-a", seq=seq)
                assert dev.publish(topics.update_topic(FLEET, "dev-a"), data).wait(5)
            acks = _acks(dev.incoming())
    assert acks == [1, 2, 3, 4, 5]  # before the fix: every update delivered (and acked) twice


def test_offline_device_gets_only_the_latest_offer_and_offers_are_paced(tmp_path: Path) -> None:
    """Many small updates while a device is away: the server coalesces offers, and the device
    reconnecting to its persistent session receives one offer and one delta (the retained
    latest of each)."""
    from agent.model_feed import OFFER_QOS
    from protocol.downlink import decode_delta

    manifest = make_artifacts(tmp_path / "artifacts", 6)
    key, _ = write_key(tmp_path)
    offer_topic = topics.global_model_topic(FLEET, manifest.model_id)
    delta_topic = topics.model_delta_topic(FLEET, manifest.model_id)
    with running_mosquitto(
        tmp_path / "mq", "prod", fleet=FLEET, devices=["dev-a", "dev-b"]
    ) as broker:
        doc = _server_doc(
            broker, key, strategy={"name": "fedasync", "alpha": 0.5}, admission={"rate_burst": 100}
        )
        doc["strategy"].pop("buffer_size")
        app = ServerApp(parse_config(doc, tmp_path))
        with app:
            # dev-a: persistent session, subscribed the way the agent subscribes, then offline
            with link(broker.client_config("dev-a")) as away:
                away.subscribe(offer_topic, OFFER_QOS)
                away.subscribe(delta_topic, OFFER_QOS)
                time.sleep(0.3)
            with link(broker.client_config("dev-b")) as busy:
                for seq in range(1, 41):
                    data = update_bytes(
                        manifest,
                        np.full(6, 1e-3, np.float32),
                        device="dev-b",
                        seq=seq,
                        base=seq - 1,
                    )
                    assert busy.publish(topics.update_topic(FLEET, "dev-b"), data).wait(5)
                    time.sleep(0.02)
            assert app.wait_for_version(40, timeout=20)
            deadline = time.monotonic() + 15  # the latest version is always published eventually
            while app.status().published_version != 40 and time.monotonic() < deadline:
                time.sleep(0.05)
            offers_published = app.offers_published
            with link(broker.client_config("dev-a")) as back:
                back.subscribe(offer_topic, OFFER_QOS)
                back.subscribe(delta_topic, OFFER_QOS)
                got = collect(back.incoming(), quiet=1.5)
    versions = [decode_offer(m.payload).version for m in got if m.topic == offer_topic]
    deltas = [decode_delta(m.payload).version for m in got if m.topic == delta_topic]
    print(
        f"\n40 versions -> {offers_published} offers published; reconnecting device got {versions}"
    )
    assert offers_published <= 5  # before the fix: one per version (40)
    assert versions == [40]  # before the fix: every offer queued in its session
    assert deltas == [40]  # deltas are QoS 0 and retained too: nothing queued


def test_retained_update_is_ignored_and_cleared_and_oversized_status_cleared(
    tmp_path: Path,
) -> None:
    manifest = make_artifacts(tmp_path / "artifacts", 6)
    key, _ = write_key(tmp_path)
    servers = ["fleet-server", "fleet-watch"]
    update = topics.update_topic(FLEET, "dev-a")
    status = topics.status_topic(FLEET, "dev-a")
    with running_mosquitto(
        tmp_path / "mq", "prod", fleet=FLEET, devices=["dev-a"], server_users=servers
    ) as broker:
        with link(broker.client_config("dev-a")) as dev:  # parked while no server listens
            data = update_bytes(manifest, np.ones(6, np.float32), device="dev-a", seq=1)
            assert dev.publish(update, data, retain=True).wait(5)
            assert dev.publish(status, b"\x00" * (1 << 20), retain=True).wait(5)
        doc = _server_doc(broker, key, strategy={"name": "fedasync", "alpha": 1.0})
        doc["strategy"].pop("buffer_size")
        for _restart in range(2):
            with ServerApp(parse_config(doc, tmp_path)) as app:
                time.sleep(1.5)
                version, counts = app.status().version, app.status().counts
        watch_filters = [
            topics.update_subscription(FLEET),
            topics.device_subscription(FLEET, topics.DeviceTopicKind.STATUS),
        ]
        with link(broker.server_config("fleet-watch"), *watch_filters) as watch:
            left = [(m.topic, len(m.payload)) for m in collect(watch.incoming(), quiet=1.0)]
    assert version == 0, counts  # before the fix: the parked update was applied
    assert counts.get("accepted", 0) == 0
    assert left == []  # before the fix: 1 MiB status and the update still retained


def test_cli_provisioned_broker_keeps_devices_out_of_the_group(tmp_path: Path) -> None:
    """End to end with what an operator runs: `fleetlearn broker` CLI provisioning, then the
    committed mosquitto.prod.conf on those files (only ports and paths rewritten)."""
    import argparse
    import subprocess
    import tomllib

    from fleet.embedded_broker import free_port
    from fleetlearn.provision_cli import add_arguments, run
    from tests.support.mosquitto import CONF_DIR, localize_conf, require_mosquitto
    from transport import BrokerConfig

    root = tmp_path / "secrets"

    def broker_cli(*argv: str) -> None:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        run(parser.parse_args(["--dir", str(root), *argv]))

    broker_cli("init-ca", "--fleet", FLEET)
    broker_cli("server-cert", "--host", "127.0.0.1")
    broker_cli("acl", "--fleet", FLEET)
    broker_cli("enrol-server")
    url = "mqtts://127.0.0.1:8884"
    broker_cli("enrol-device", "hostile", "--fleet", FLEET, "--url", url, "--no-cert")
    broker_cli("enrol-device", "honest", "--fleet", FLEET, "--url", url, "--no-cert")
    ports = {8883: free_port(), 8884: free_port()}
    (tmp_path / "data").mkdir()
    conf = localize_conf(
        (CONF_DIR / "mosquitto.prod.conf").read_text(),
        ports=ports,
        files_dir=root / "broker",
        data_dir=tmp_path / "data",
    )
    (tmp_path / "mosquitto.conf").write_text(conf)
    log = (tmp_path / "mosquitto.log").open("wb")
    proc = subprocess.Popen(
        [require_mosquitto(), "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log
    )

    def cfg(name: str, password: str) -> BrokerConfig:
        return BrokerConfig(
            url=f"mqtts://127.0.0.1:{ports[8884]}",
            client_id=name,
            username=name,
            password=password,
            ca_file=root / "ca" / "ca.crt",
            backoff_initial=0.1,
        )

    def device_password(name: str) -> str:
        doc = tomllib.loads((root / "devices" / name / "agent.toml").read_text())
        return str(doc["broker"]["password"])

    try:
        time.sleep(0.5)
        server_pw = (root / "servers" / "fleet-server" / "password").read_text().strip()
        shared = topics.shared_update_subscription(FLEET, GROUP)
        with (
            link(cfg("fleet-server", server_pw), shared) as server,
            link(cfg("hostile", device_password("hostile")), shared),
            link(cfg("honest", device_password("honest"))) as honest,
        ):
            for seq in range(20):
                assert honest.publish(topics.update_topic(FLEET, "honest"), b"%d" % seq).wait(5)
            got = len(collect(server.incoming(), quiet=1.0))
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    assert got == 20, (tmp_path / "mosquitto.log").read_text()[-2000:]
