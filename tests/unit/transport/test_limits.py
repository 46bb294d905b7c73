from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ProtocolError, Reason
from transport import BrokerConfig, MqttLink, OversizeMessage, publish_packet_size
from transport.limits import varint_size


def test_packet_size_by_hand() -> None:
    # topic "a/b" (3 B), QoS 1, 10 B payload, 3.1.1:
    # remaining = 2 (topic length) + 3 + 2 (packet id) + 10 = 17 -> 1 length byte; + 1 header byte
    assert publish_packet_size("a/b", 10, 1, v5=False) == 1 + 1 + 17
    # v5 adds the 1-byte empty property length; QoS 0 has no packet id
    assert publish_packet_size("a/b", 10, 0, v5=True) == 1 + 1 + (2 + 3 + 1 + 10)
    # 200 B payload: remaining 207 needs 2 length bytes
    assert publish_packet_size("a/b", 200, 1, v5=False) == 1 + 2 + 207


@pytest.mark.parametrize(
    ("value", "size"),
    [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (2_097_151, 3), (2_097_152, 4)],
)
def test_varint_boundaries(value: int, size: int) -> None:
    assert varint_size(value) == size


@given(st.text(min_size=1, max_size=50), st.integers(0, 10_000_000), st.sampled_from([0, 1]))
def test_size_is_monotonic_in_payload(topic: str, n: int, qos: int) -> None:
    assert publish_packet_size(topic, n + 1, qos, v5=True) > publish_packet_size(
        topic, n, qos, v5=True
    )


def test_oversize_refused_before_sending_without_a_broker() -> None:
    """No broker at all: the check happens before paho sees the message."""
    link = MqttLink(BrokerConfig("mqtt://127.0.0.1:9", "dev-1", max_packet_size=1024))
    with pytest.raises(OversizeMessage) as err:
        link.publish("fl/f/device/dev-1/update", b"x" * 1024)
    assert isinstance(err.value, ProtocolError) and err.value.reason is Reason.OVERSIZE
    assert "1024" in str(err.value) and "configured" in str(err.value)
    small = link.publish("fl/f/device/dev-1/update", b"x" * 100)  # queued for later
    assert not small.done
