"""What MqttLink hands out: incoming messages, publish handles, its state."""

from __future__ import annotations

import threading
from enum import StrEnum
from typing import NamedTuple

from transport.errors import PublishRefused

__all__ = ["IncomingMessage", "LinkState", "PublishHandle"]


class LinkState(StrEnum):
    STOPPED = "stopped"
    CONNECTING = "connecting"  # TCP/TLS connect sent, waiting for CONNACK
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"  # lost or refused; waiting a jittered delay before retrying


class IncomingMessage(NamedTuple):
    topic: str
    payload: bytes
    retained: bool


class PublishHandle:
    """Completion of one publish: QoS 0 when written, QoS 1 when the PUBACK arrives.

    `wait` returns True once complete, False on timeout, and raises PublishRefused when an MQTT v5
    broker answered with a failure reason code (e.g. 135 Not authorized).
    """

    __slots__ = ("_done", "_reason", "_reason_code", "payload", "qos", "retain", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.topic = topic
        self.payload = payload  # kept until done: re-published if the link changes protocol
        self.qos = qos
        self.retain = retain
        self._done = threading.Event()
        self._reason_code = 0
        self._reason = "Success"

    def _complete(self, reason_code: int, reason: str) -> None:
        self._reason_code = reason_code
        self._reason = reason
        self.payload = b""
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def reason_code(self) -> int | None:
        """None while pending; 0 success; >= 0x80 refused (v5 only)."""
        return self._reason_code if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> bool:
        if not self._done.wait(timeout):
            return False
        if self._reason_code >= 0x80:
            raise PublishRefused(self.topic, self._reason_code, self._reason)
        return True
