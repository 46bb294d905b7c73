"""Exact size of an MQTT PUBLISH packet, so an oversize message is refused before it is sent."""

from __future__ import annotations

__all__ = ["publish_packet_size", "varint_size"]

_MAX_REMAINING = 268_435_455  # largest MQTT "remaining length" (4-byte variable integer)


def varint_size(value: int) -> int:
    """Bytes of an MQTT variable byte integer (1..4)."""
    if not 0 <= value <= _MAX_REMAINING:
        raise ValueError(f"{value} does not fit an MQTT variable byte integer")
    size = 1
    while value >= 128:
        value >>= 7
        size += 1
    return size


def publish_packet_size(topic: str, payload_len: int, qos: int, *, v5: bool) -> int:
    """Whole packet: fixed header (1 + length bytes) + topic + packet id + props + payload.

    We send no PUBLISH properties, so on v5 the property block is its 1-byte zero length.
    """
    remaining = (
        2 + len(topic.encode("utf-8")) + (2 if qos > 0 else 0) + (1 if v5 else 0) + payload_len
    )
    if remaining > _MAX_REMAINING:
        return 1 + 4 + remaining  # not representable at all; report it as huge
    return 1 + varint_size(remaining) + remaining
