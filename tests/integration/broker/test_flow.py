"""Updates in, offers out, through the production config; limits; reconnects; last will."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocol import topics
from protocol.errors import Reason
from tests.integration.broker.helpers import collect, link, wait_for
from tests.support.mosquitto import MosquittoHandle
from transport import OversizeMessage, publish_packet_size

pytestmark = pytest.mark.integration

FLEET = "test"
REPO = Path(__file__).resolve().parents[3]


def test_server_gets_every_update_and_offers_reach_every_device(
    mosquitto_prod: MosquittoHandle,
) -> None:
    broker = mosquitto_prod
    offer = topics.global_model_topic(FLEET, "m1")
    devices = {
        "dev-a": broker.client_config("dev-a"),
        "dev-b": broker.client_config("dev-b", protocol="v311"),
        "dev-p": broker.client_config("dev-p", listener="password"),
    }
    with link(broker.server_config(), topics.update_subscription(FLEET)) as server:
        links = {
            name: link(cfg, topics.global_model_subscription(FLEET))
            for name, cfg in devices.items()
        }
        entered = {name: cm.__enter__() for name, cm in links.items()}
        try:
            server.publish(offer, b"offer-v1", retain=True).wait(5)
            for name, dev in entered.items():
                assert wait_for(dev.incoming(), offer).payload == b"offer-v1", name
                for seq in range(3):
                    dev.publish(topics.update_topic(FLEET, name), f"{name}:{seq}".encode()).wait(5)
            got = collect(server.incoming())
            expected = {
                (topics.update_topic(FLEET, n), f"{n}:{s}".encode())
                for n in devices
                for s in range(3)
            }
            assert {(m.topic, m.payload) for m in got} == expected
            assert len(got) == 9
        finally:
            for cm in links.values():
                cm.__exit__(None, None, None)


def test_retained_offer_reaches_a_device_that_connects_later(
    mosquitto_prod: MosquittoHandle,
) -> None:
    broker = mosquitto_prod
    offer = topics.global_model_topic(FLEET, "m1")
    with link(broker.server_config()) as server:
        server.publish(offer, b"offer-v7", retain=True).wait(5)
    with link(broker.client_config("dev-b"), topics.global_model_subscription(FLEET)) as late:
        msg = wait_for(late.incoming(), offer)
        assert (msg.payload, msg.retained) == (b"offer-v7", True)


def test_oversize_update_is_refused_before_sending(mosquitto_prod: MosquittoHandle) -> None:
    broker = mosquitto_prod
    topic = topics.update_topic(FLEET, "dev-a")
    with (
        link(broker.server_config(), topics.update_subscription(FLEET)) as server,
        link(broker.client_config("dev-a")) as dev,
    ):
        limit = dev.max_packet_size
        assert (
            limit == 8 * 1024 * 1024
        )  # announced in the v5 CONNACK (max_packet_size in prod conf)
        overhead = publish_packet_size(topic, 0, 1, v5=True)
        fits = b"\0" * (limit - overhead - 3)  # the length field grows from 1 to 4 bytes: +3
        assert publish_packet_size(topic, len(fits), 1, v5=True) == limit
        with pytest.raises(OversizeMessage) as err:
            dev.publish(topic, fits + b"\0")
        assert err.value.reason is Reason.OVERSIZE
        assert str(limit) in str(err.value) and str(limit + 1) in str(err.value)
        # the refused one never left; the link is still up and the largest legal one arrives
        assert dev.connected and dev.connect_count == 1
        assert dev.publish(topic, fits).wait(20)
        got = collect(server.incoming(), quiet=1.0)
        assert [len(m.payload) for m in got] == [len(fits)]
        assert dev.connect_count == 1


def test_configured_limit_applies_on_mqtt_311(mosquitto_prod: MosquittoHandle) -> None:
    cfg = mosquitto_prod.client_config("dev-a", protocol="v311", max_packet_size=4096)
    with link(cfg) as dev:
        assert dev.max_packet_size == 4096  # no CONNACK property on 3.1.1: the config's value
        with pytest.raises(OversizeMessage, match="4096"):
            dev.publish(topics.update_topic(FLEET, "dev-a"), b"x" * 4096)


def test_broker_restart_link_reconnects_resubscribes_and_delivers_queued(
    mosquitto_prod: MosquittoHandle,
) -> None:
    """Persistent session: an update published while the broker is down is delivered after."""
    broker = mosquitto_prod
    offer = topics.global_model_topic(FLEET, "m1")
    update = topics.update_topic(FLEET, "dev-a")
    with (
        link(broker.server_config(), topics.update_subscription(FLEET)) as server,
        link(broker.client_config("dev-a"), topics.global_model_subscription(FLEET)) as dev,
    ):
        broker.stop()
        deadline = time.monotonic() + 5
        while dev.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not dev.connected
        pending = dev.publish(update, b"written-during-outage")
        broker.start()
        assert dev.wait_connected(10) and server.wait_connected(10)
        assert pending.wait(10)
        assert wait_for(server.incoming(), update).payload == b"written-during-outage"
        server.publish(offer, b"after-restart").wait(5)
        assert wait_for(dev.incoming(), offer).payload == b"after-restart"
        assert dev.connect_count >= 2


def test_last_will_marks_a_killed_device_offline(mosquitto_prod: MosquittoHandle) -> None:
    broker = mosquitto_prod
    status = topics.status_topic(FLEET, "dev-a")
    cfg = broker.client_config("dev-a", keepalive=5)
    script = f"""
import sys, time
from pathlib import Path
from transport import BrokerConfig, MqttLink
cfg = BrokerConfig(url={cfg.url!r}, client_id="dev-a", ca_file=Path({str(cfg.ca_file)!r}),
                   cert_file=Path({str(cfg.cert_file)!r}), key_file=Path({str(cfg.key_file)!r}))
link = MqttLink(cfg, will=({status!r}, b"offline", True))
link.start()
assert link.wait_connected(10)
link.publish({status!r}, b"online", retain=True).wait(5)
print("up", flush=True)
time.sleep(60)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with link(broker.server_config(), status) as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", script], env=env, cwd=REPO, stdout=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
            assert wait_for(server.incoming(), status).payload == b"online"
            os.kill(proc.pid, signal.SIGKILL)  # power loss: no DISCONNECT sent
            proc.wait(5)
            assert wait_for(server.incoming(), status, timeout=15).payload == b"offline"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
