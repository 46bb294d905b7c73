"""Errors transport raises (subclasses of protocol's tree; see protocol/errors.py)."""

from __future__ import annotations

from protocol.errors import FleetlearnError, ProtocolError, Reason

__all__ = ["OversizeMessage", "PublishFailed", "PublishRefused"]


class OversizeMessage(ProtocolError):
    """A publish larger than the broker accepts, refused before anything is sent.

    Sending it would make the broker drop the connection and paho re-send it forever (FACTS.md).
    """

    def __init__(self, topic: str, size: int, limit: int, source: str) -> None:
        super().__init__(
            Reason.OVERSIZE,
            f"publish to {topic!r} is {size} bytes as an MQTT packet, above the broker's maximum "
            f"packet size of {limit} bytes ({source}); not sent",
        )
        self.topic = topic
        self.size = size
        self.limit = limit


class PublishFailed(FleetlearnError):
    """The MQTT client would not take a publish, e.g. paho's "Message queue full" once all
    65,535 message ids of its QoS 1 publishes are in flight (FACTS.md). Nothing was sent; the
    caller decides whether the message matters enough to try again later."""

    def __init__(self, topic: str, detail: str) -> None:
        super().__init__(f"publish to {topic!r} not sent: {detail}")
        self.topic = topic
        self.detail = detail


class PublishRefused(FleetlearnError):
    """The broker answered a QoS 1 publish with a failure reason code (MQTT v5 PUBACK),
    e.g. 135 'Not authorized' when the ACL forbids the topic. MQTT 3.1.1 has no such answer:
    a forbidden publish is acknowledged and silently dropped."""

    def __init__(self, topic: str, reason_code: int, reason: str) -> None:
        super().__init__(
            f"broker refused publish to {topic!r}: {reason} (reason code {reason_code})"
        )
        self.topic = topic
        self.reason_code = reason_code
        self.reason = reason
