"""Cohort messages are addressed to one device: the ACL stops every other device reading them."""

from __future__ import annotations

import pytest

from protocol import topics
from protocol.secagg.messages import CohortResult, SecAggJoin, ShareBundle, ShareOut, encode
from tests.integration.broker.helpers import collect, link
from tests.support.mosquitto import MosquittoHandle
from transport import PublishRefused

pytestmark = pytest.mark.integration

FLEET = "test"
CID = bytes(range(16))


@pytest.mark.parametrize("protocol", ["v5", "v311"])
def test_device_cannot_read_another_devices_cohort_messages(
    mosquitto_prod: MosquittoHandle, protocol: str
) -> None:
    broker = mosquitto_prod
    snoop = [
        "#",
        topics.device_subscription(FLEET, topics.DeviceTopicKind.SECAGG_DOWN),
        topics.device_subscription(FLEET, topics.DeviceTopicKind.SECAGG_UP),
        topics.secagg_down_topic(FLEET, "dev-b"),
        # its own: the dynamic-security plugin refuses the SUBSCRIBEs above outright (issue 15),
        # so without this dev-a would receive nothing at all and the control would say nothing
        topics.secagg_down_topic(FLEET, "dev-a"),
    ]
    share = ShareOut("dev-a", b"\x01" * 148, b"\x02" * 32, b"\x03" * 32)
    for_b = encode(ShareBundle(CID, ("dev-a", "dev-b"), (share,)))
    for_a = encode(CohortResult(CID, True, "ok", 3))
    join_b = encode(
        SecAggJoin(
            "dev-b", "m1", b"\x05" * 32, b"\x06" * 32, b"\x07" * 32, b"\x08" * 64, b"\x09" * 64
        )
    )
    with (
        link(
            broker.server_config(),
            topics.device_subscription(FLEET, topics.DeviceTopicKind.SECAGG_UP),
        ) as server,  # fmt: skip
        link(broker.client_config("dev-a", protocol=protocol), *snoop) as dev_a,
        link(broker.client_config("dev-b"), topics.secagg_down_topic(FLEET, "dev-b")) as dev_b,
    ):
        dev_b.publish(topics.secagg_up_topic(FLEET, "dev-b"), join_b).wait(5)
        server.publish(topics.secagg_down_topic(FLEET, "dev-b"), for_b).wait(5)
        server.publish(topics.secagg_down_topic(FLEET, "dev-a"), for_a).wait(5)
        got_a = collect(dev_a.incoming())
        got_b = collect(dev_b.incoming())
        got_server = collect(server.incoming())
    # control: the addressee and the server do receive what is theirs
    assert [(m.topic, m.payload) for m in got_b] == [
        (topics.secagg_down_topic(FLEET, "dev-b"), for_b)
    ]
    assert [m.payload for m in got_server] == [join_b]
    # dev-a, subscribed to everything, sees only its own cohort message (once per filter)
    assert {m.topic for m in got_a} == {topics.secagg_down_topic(FLEET, "dev-a")}
    assert all(m.payload == for_a for m in got_a)


@pytest.mark.parametrize(
    "topic",
    [
        topics.secagg_up_topic(FLEET, "dev-b"),  # speak in another device's cohort
        topics.secagg_down_topic(FLEET, "dev-a"),  # forge the server's cohort messages
        topics.secagg_down_topic(FLEET, "dev-b"),
        # its own: the dynamic-security plugin refuses the SUBSCRIBEs above outright (issue 15),
        # so without this dev-a would receive nothing at all and the control would say nothing
        topics.secagg_down_topic(FLEET, "dev-a"),
    ],
)
def test_device_cannot_forge_cohort_messages(mosquitto_prod: MosquittoHandle, topic: str) -> None:
    broker = mosquitto_prod
    with link(broker.client_config("dev-a")) as dev_a:
        with pytest.raises(PublishRefused) as refused:
            dev_a.publish(topic, b"forged").wait(5)
        assert refused.value.reason_code == 135
        assert dev_a.publish(topics.secagg_up_topic(FLEET, "dev-a"), b"mine").wait(5)
