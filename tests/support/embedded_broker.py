"""The in-process amqtt broker (fleet/embedded_broker.py) as a pytest fixture.

    def test_x(embedded_broker: EmbeddedBroker) -> None:
        cfg = BrokerConfig(embedded_broker.url, "dev-1", protocol="v311")

amqtt speaks MQTT 3.1.1 only: pass protocol="v311" (or "auto", which waits connack_timeout
for a v5 answer that never comes, then falls back). No TLS, no ACL, anonymous.
Import the fixture into a conftest.py: `from tests.support.embedded_broker import embedded_broker`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fleet.embedded_broker import EmbeddedBroker

__all__ = ["EmbeddedBroker", "embedded_broker"]


@pytest.fixture
def embedded_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as broker:
        yield broker
