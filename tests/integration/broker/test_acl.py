"""The ACL makes the topic the identity: a device can neither speak for another nor read it."""

from __future__ import annotations

import pytest

from protocol import topics
from tests.integration.broker.helpers import collect, link, wait_for
from tests.support.mosquitto import MosquittoHandle
from transport import PublishRefused

pytestmark = pytest.mark.integration

FLEET = "test"
# What the aggregator identity may subscribe to (the broker refuses it `fl/#`: dynamic security
# checks every SUBSCRIBE, issue 15).
SERVER_VIEW = [
    topics.update_subscription(FLEET),
    topics.device_subscription(FLEET, topics.DeviceTopicKind.STATUS),
    topics.global_model_subscription(FLEET),
]
FORBIDDEN_FOR_A = [
    topics.update_topic(FLEET, "dev-b"),  # another device's update
    topics.global_model_topic(FLEET, "m1"),  # the global model (server only)
    topics.model_delta_topic(FLEET, "m1"),  # a downlink delta (server only)
    topics.status_topic(FLEET, "dev-b"),  # another device's status
    topics.ack_topic(FLEET, "dev-a"),  # acks come from the server only
]


@pytest.mark.parametrize("topic", FORBIDDEN_FOR_A)
def test_v5_forbidden_publish_is_refused_not_authorized(
    mosquitto_prod: MosquittoHandle, topic: str
) -> None:
    broker = mosquitto_prod
    with (
        link(broker.server_config(), *SERVER_VIEW) as server,
        link(broker.client_config("dev-a")) as dev_a,
    ):
        with pytest.raises(PublishRefused) as refused:
            dev_a.publish(topic, b"forged").wait(5)
        assert refused.value.reason_code == 135  # v5 PUBACK "Not authorized"
        # control: the same link may publish its own update, and only that arrives
        own = topics.update_topic(FLEET, "dev-a")
        assert dev_a.publish(own, b"mine").wait(5)
        got = collect(server.incoming())
        assert [(m.topic, m.payload) for m in got] == [(own, b"mine")]


def test_v311_forbidden_publish_is_acked_but_not_delivered(mosquitto_prod: MosquittoHandle) -> None:
    broker = mosquitto_prod
    with (
        link(broker.server_config(), *SERVER_VIEW) as server,
        link(
            broker.client_config("dev-a", protocol="v311"), topics.ack_topic(FLEET, "dev-a")
        ) as dev_a,
    ):
        assert dev_a.protocol == "3.1.1"
        for topic in FORBIDDEN_FOR_A:
            assert dev_a.publish(topic, b"forged").wait(5)  # 3.1.1 cannot say no ...
        own = topics.update_topic(FLEET, "dev-a")
        dev_a.publish(own, b"mine").wait(5)
        got = collect(server.incoming())
        assert [m.topic for m in got] == [own]  # ... but nothing forged was delivered
        assert collect(dev_a.incoming(), quiet=0.2) == []  # (not even its own forged ack)


@pytest.mark.parametrize("protocol", ["v5", "v311"])
def test_snooping_device_receives_nothing_of_others(
    mosquitto_prod: MosquittoHandle, protocol: str
) -> None:
    broker = mosquitto_prod
    snoop_filters = [
        topics.ack_topic(FLEET, "dev-a"),  # its own: allowed
        topics.global_model_subscription(FLEET),  # allowed
        topics.model_delta_subscription(FLEET),  # allowed
        "#",
        topics.update_subscription(FLEET),
        topics.device_subscription(FLEET, topics.DeviceTopicKind.ACK),
        topics.ack_topic(FLEET, "dev-b"),
    ]
    with (
        link(broker.server_config()) as server,
        link(broker.client_config("dev-a", protocol=protocol), *snoop_filters) as dev_a,
        link(broker.client_config("dev-b")) as dev_b,
    ):
        dev_b.publish(topics.update_topic(FLEET, "dev-b"), b"b-update").wait(5)
        dev_b.publish(topics.status_topic(FLEET, "dev-b"), b"b-status", retain=True).wait(5)
        server.publish(topics.ack_topic(FLEET, "dev-b"), b"ack-for-b").wait(5)
        server.publish(topics.ack_topic(FLEET, "dev-a"), b"ack-for-a").wait(5)
        offer = topics.global_model_topic(FLEET, "m1")
        server.publish(offer, b"offer", retain=True).wait(5)
        delta = topics.model_delta_topic(FLEET, "m1")
        server.publish(delta, b"delta", retain=True).wait(5)
        got = collect(dev_a.incoming())
        # dev-a sees exactly what it may read: its own ack, the global offer and the delta
        # (overlapping filters may deliver a message once per matching subscription)
        assert {m.topic for m in got} == {topics.ack_topic(FLEET, "dev-a"), offer, delta}
        assert all(b"b-" not in m.payload and m.payload != b"ack-for-b" for m in got)


def test_server_reads_updates_of_every_device_through_shared_subscription(
    mosquitto_prod: MosquittoHandle,
) -> None:
    broker = mosquitto_prod
    shared = topics.shared_update_subscription(FLEET, "aggregators")
    with (
        link(broker.server_config(), shared) as server,
        link(broker.client_config("dev-a")) as dev_a,
        link(broker.client_config("dev-b")) as dev_b,
    ):
        dev_a.publish(topics.update_topic(FLEET, "dev-a"), b"a").wait(5)
        dev_b.publish(topics.update_topic(FLEET, "dev-b"), b"b").wait(5)
        wait_for(server.incoming(), topics.update_topic(FLEET, "dev-a"))
        wait_for(server.incoming(), topics.update_topic(FLEET, "dev-b"))
