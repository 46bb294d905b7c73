"""The part of `transport.MqttLink` the agent uses, as a Protocol, so tests can pass a fake."""

from __future__ import annotations

import queue
from typing import Any, Protocol

__all__ = ["Incoming", "Link"]


class Incoming(Protocol):
    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


class Link(Protocol):
    def subscribe(self, topic_filter: str, qos: int = 1) -> None: ...

    def unsubscribe(self, topic_filter: str) -> None: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any: ...

    def incoming(self) -> queue.Queue[Any]: ...

    @property
    def connected(self) -> bool: ...
