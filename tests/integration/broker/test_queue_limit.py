"""The silent-drop trap (FACTS.md): past `max_queued_messages` Mosquitto drops QoS 1 messages for
an offline persistent session, while every sender still gets its PUBACK. The queue is set small
on purpose (`extra_conf`) so a handful of updates shows it; the production value is 10,000."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleetlearn.provision_acl import DEFAULT_SERVER_USER
from protocol import topics
from tests.integration.broker.helpers import collect, link
from tests.support.mosquitto import running_mosquitto

pytestmark = pytest.mark.integration

FLEET = "test"
QUEUE = 4  # max_queued_messages for this test
DEVICES = ["dev-a", "dev-b", "dev-c"]
UPDATES_EACH = 4  # 12 updates sent while the aggregator is away: 8 more than the queue holds


def test_offline_aggregator_misses_updates_past_the_queue_and_senders_never_know(
    tmp_path: Path,
) -> None:
    with running_mosquitto(
        tmp_path, "prod", fleet=FLEET, devices=DEVICES, extra_conf=f"max_queued_messages {QUEUE}\n"
    ) as broker:
        # the aggregator's persistent session exists and holds the update subscription ...
        with link(broker.server_config(), topics.update_subscription(FLEET)):
            pass
        # ... then it is away (a restart) while every device publishes
        started = time.monotonic()
        sent: list[tuple[str, bytes]] = []
        for name in DEVICES:
            with link(broker.client_config(name)) as dev:
                for seq in range(UPDATES_EACH):
                    payload = f"{name}:{seq}".encode()
                    handle = dev.publish(topics.update_topic(FLEET, name), payload)
                    assert handle.wait(5) and handle.reason_code == 0  # the broker took it
                    sent.append((topics.update_topic(FLEET, name), payload))
        with link(broker.server_config(), topics.update_subscription(FLEET)) as server:
            got = [(m.topic, m.payload) for m in collect(server.incoming(), quiet=1.0)]
        elapsed = time.monotonic() - started
        log = broker.log_text()
    print(f"\nsent {len(sent)}, the aggregator got {len(got)} (queue {QUEUE}) in {elapsed:.1f} s")
    assert len(sent) == len(DEVICES) * UPDATES_EACH
    assert len(got) == QUEUE  # the oldest QUEUE arrive, in order; the rest are gone
    assert got == sent[:QUEUE]
    assert f"Outgoing messages are being dropped for client {DEFAULT_SERVER_USER}" in log
