"""A hostile device must not make the broker hoard model offers for it.

The probe: a device subscribed to the offers at QoS 1 on a persistent session, then went
offline; the broker queued every offer for it (808 offers, 31 MB in 6.8 minutes; broker memory
10.7 -> 66 MB). The agent subscribes at QoS 0, but the broker cannot make a device do so and the
ACL cannot cap a subscription's QoS. A message is delivered at the lower of its publish QoS and
the subscription's, and Mosquitto never queues QoS 0 for an offline client: offers published at
QoS 0 (retained) reach a device only while it is connected, plus the retained latest when it
subscribes, whatever QoS it asked for.

Real ServerApp, real Mosquitto on the committed production config.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protocol import topics
from protocol.messages import decode_offer
from server.app import ServerApp
from server.config import parse_config
from tests.integration.broker.helpers import collect, link
from tests.support.mosquitto import MosquittoHandle, running_mosquitto
from tests.unit.server.factory import make_artifacts, update_bytes, write_key

pytestmark = pytest.mark.integration

FLEET = "test"
PARAMS = 1 << 17  # 131,072 float32 = 512 KiB per offer
OFFERS = 60  # 30 MiB if every one were queued


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _server_doc(mq: MosquittoHandle, key: Path) -> dict[str, Any]:
    cfg = mq.server_config()
    return {
        "fleet": FLEET,
        "artifacts": "artifacts",
        "signing_key": str(key),
        "state_dir": "state",
        "strategy": {"name": "fedasync", "alpha": 0.5},
        "publish": {"every_versions": 1, "min_interval_seconds": 0},  # one offer per version
        "admission": {"rate_per_minute": 0},
        "broker": {
            "url": cfg.url,
            "client_id": "fleet-server",
            "ca_file": str(cfg.ca_file),
            "cert_file": str(cfg.cert_file),
            "key_file": str(cfg.key_file),
            "protocol": "v5",
        },
    }


def test_offline_qos1_subscriber_does_not_make_the_broker_queue_offers(tmp_path: Path) -> None:
    manifest = make_artifacts(tmp_path / "artifacts", PARAMS)
    key, _ = write_key(tmp_path)
    offer_topics = [
        topics.global_model_topic(FLEET, manifest.model_id),
        topics.serving_model_topic(FLEET, manifest.model_id),
    ]
    with running_mosquitto(
        tmp_path / "mq", "prod", fleet=FLEET, devices=["hostile", "dev-b"]
    ) as broker:
        app = ServerApp(parse_config(_server_doc(broker, key), tmp_path))
        with app:
            # persistent session (MqttLink's default), QoS 1, then offline
            with link(broker.client_config("hostile")) as hostile:
                for topic in offer_topics:
                    hostile.subscribe(topic, qos=1)
                time.sleep(0.5)
                collect(hostile.incoming(), quiet=0.5)  # the retained start-up offers
            rss_before = _rss_kib(broker.pid)
            with link(broker.client_config("dev-b")) as busy:
                for seq in range(1, OFFERS + 1):
                    delta = np.full(PARAMS, 1e-3, np.float32)
                    data = update_bytes(manifest, delta, device="dev-b", seq=seq, base=seq - 1)
                    assert busy.publish(topics.update_topic(FLEET, "dev-b"), data).wait(10)
                    assert app.wait_for_version(seq, timeout=10)  # one version, one offer each
            deadline = time.monotonic() + 10
            while app.status().published_version != OFFERS and time.monotonic() < deadline:
                time.sleep(0.05)
            published = app.offers_published
            time.sleep(0.5)
            rss_after = _rss_kib(broker.pid)
            with link(broker.client_config("hostile")) as back:  # same session, resubscribes
                for topic in offer_topics:
                    back.subscribe(topic, qos=1)
                got = collect(back.incoming(), quiet=1.5)
    versions = {
        t: [decode_offer(m.payload).version for m in got if m.topic == t] for t in offer_topics
    }
    offer_kib = PARAMS * 4 // 1024
    print(
        f"\n{published} offer rounds of {offer_kib} KiB (global + serving) while a QoS 1 "
        f"subscriber was offline: broker VmRSS {rss_before} -> {rss_after} KiB "
        f"(+{rss_after - rss_before} KiB); on reconnect it got "
        f"{ {t.rsplit('/', 1)[1]: v for t, v in versions.items()} }"
    )
    assert published >= OFFERS
    for topic in offer_topics:
        assert versions[topic] == [OFFERS], topic  # before the fix: every offer, queued
    assert rss_after - rss_before < 4 * offer_kib  # before the fix: ~2 x 60 x 512 KiB
