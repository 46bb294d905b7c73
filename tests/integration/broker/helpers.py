"""Small helpers for the broker integration tests."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager

from transport import BrokerConfig, IncomingMessage, MqttLink

__all__ = ["collect", "link", "wait_for"]


@contextmanager
def link(
    config: BrokerConfig,
    *subscriptions: str,
    will: tuple[str, bytes, bool] | None = None,
    connect: bool = True,
) -> Iterator[MqttLink]:
    """A started MqttLink (connected unless connect=False), stopped on exit."""
    mqtt_link = MqttLink(config, will=will)
    for topic_filter in subscriptions:
        mqtt_link.subscribe(topic_filter)
    mqtt_link.start()
    try:
        if connect:
            assert mqtt_link.wait_connected(10), mqtt_link.last_error
            time.sleep(0.1)  # SUBACK round trip: subscriptions are live before the test publishes
        yield mqtt_link
    finally:
        mqtt_link.stop()


def collect(
    q: queue.Queue[IncomingMessage], quiet: float = 0.5, limit: float = 10.0
) -> list[IncomingMessage]:
    """Everything that arrives until nothing came for `quiet` seconds."""
    out: list[IncomingMessage] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            out.append(q.get(timeout=quiet))
        except queue.Empty:
            break
    return out


def wait_for(q: queue.Queue[IncomingMessage], topic: str, timeout: float = 10.0) -> IncomingMessage:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"nothing on {topic!r} within {timeout} s")
        try:
            msg = q.get(timeout=remaining)
        except queue.Empty:
            continue
        if msg.topic == topic:
            return msg
