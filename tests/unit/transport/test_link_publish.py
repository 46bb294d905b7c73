"""MqttLink.publish refusals surface as one typed error (no broker needed: the link is never
started, so paho queues QoS 1 publishes in its session, where each one holds a message id)."""

from __future__ import annotations

import pytest

from transport import BrokerConfig, MqttLink, PublishFailed

MESSAGE_IDS = 65_535  # MQTT packet identifiers are 16-bit and never 0


def test_running_out_of_message_ids_raises_publish_failed() -> None:
    link = MqttLink(BrokerConfig("mqtt://127.0.0.1:1", client_id="ids"))
    for _ in range(MESSAGE_IDS):
        link.publish("fl/t/device/d/ack", b"x", qos=1)
    with pytest.raises(PublishFailed, match="queue full") as caught:
        link.publish("fl/t/device/d/ack", b"x", qos=1)
    assert caught.value.topic == "fl/t/device/d/ack"
    # a QoS 0 message takes no id: dropped while disconnected, never an error
    assert link.publish("fl/t/device/d/ack", b"x", qos=0).done


def test_a_topic_paho_refuses_raises_publish_failed() -> None:
    link = MqttLink(BrokerConfig("mqtt://127.0.0.1:1", client_id="wild"))
    with pytest.raises(PublishFailed, match="wildcard"):
        link.publish("fl/+/device", b"x", qos=1)
