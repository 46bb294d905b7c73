from __future__ import annotations

import pytest

from protocol.errors import ProtocolError, Reason
from protocol.topics import (
    DeviceTopic,
    DeviceTopicKind,
    ack_topic,
    global_model_topic,
    parse_device_topic,
    parse_global_model_topic,
    shared_update_subscription,
    status_topic,
    update_subscription,
    update_topic,
    validate_device_id,
)


def test_topics_match_the_design_layout() -> None:
    assert global_model_topic("home", "abc123") == "fl/home/model/abc123/global"
    assert update_topic("home", "pi-7") == "fl/home/device/pi-7/update"
    assert ack_topic("home", "pi-7") == "fl/home/device/pi-7/ack"
    assert status_topic("home", "pi-7") == "fl/home/device/pi-7/status"
    assert update_subscription("home") == "fl/home/device/+/update"
    assert shared_update_subscription("home", "agg") == "$share/agg/fl/home/device/+/update"


@pytest.mark.parametrize("kind", list(DeviceTopicKind))
def test_device_topics_parse_back(kind: DeviceTopicKind) -> None:
    topic = f"fl/home/device/pi-7/{kind.value}"
    assert parse_device_topic(topic) == DeviceTopic("home", "pi-7", kind)


def test_global_topic_parses_back() -> None:
    assert parse_global_model_topic("fl/home/model/abc/global") == ("home", "abc")


@pytest.mark.parametrize(
    "device_id",
    ["", "a/b", "+", "#", "a+b", "$sys", "%u", ".hidden", "-x", "x" * 65, "é", "a b", "a\x00"],
)
def test_device_ids_that_could_escape_a_topic_are_refused(device_id: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_device_id(device_id)
    assert info.value.reason is Reason.BAD_DEVICE_ID
    with pytest.raises(ProtocolError):
        update_topic("home", device_id)


@pytest.mark.parametrize("device_id", ["a", "pi-7", "Jetson_01.kitchen", "x" * 64])
def test_reasonable_device_ids_pass(device_id: str) -> None:
    assert validate_device_id(device_id) == device_id


@pytest.mark.parametrize(
    "topic",
    ["fl/home/device/pi/other", "fl/home/device/pi", "xx/home/device/pi/ack", "fl/home/x/pi/ack"],
)
def test_foreign_topics_are_refused(topic: str) -> None:
    with pytest.raises(ProtocolError):
        parse_device_topic(topic)
