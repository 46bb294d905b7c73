"""The embedded amqtt broker speaks 3.1.1 only: protocol "auto" falls back and still delivers."""

from __future__ import annotations

import pytest

from fleet.embedded_broker import EmbeddedBroker
from tests.integration.broker.helpers import link, wait_for
from transport import BrokerConfig

pytestmark = pytest.mark.integration


def test_auto_falls_back_to_311_and_keeps_messages_published_before_connecting() -> None:
    with EmbeddedBroker() as broker:
        sub_cfg = BrokerConfig(broker.url, "sub", protocol="v311")
        pub_cfg = BrokerConfig(broker.url, "pub", connack_timeout=1.0)  # "auto"
        with link(sub_cfg, "fl/#") as sub, link(pub_cfg, connect=False) as pub:
            handle = pub.publish("fl/x/device/d1/update", b"early")  # queued on the v5 client
            assert pub.wait_connected(10), pub.last_error
            assert pub.protocol == "3.1.1"
            assert handle.wait(10)
            assert wait_for(sub.incoming(), "fl/x/device/d1/update").payload == b"early"


def test_fixture_broker_round_trip_on_311(embedded_broker: EmbeddedBroker) -> None:
    cfg = BrokerConfig(embedded_broker.url, "dev-1", protocol=embedded_broker.protocol)
    with link(cfg, "fl/x/model/+/global") as dev:
        assert dev.protocol == "3.1.1"
        dev.publish("fl/x/model/m/global", b"offer", retain=True).wait(5)
        msg = wait_for(dev.incoming(), "fl/x/model/m/global")
        assert (msg.payload, msg.retained) == (b"offer", False)  # live delivery, not retained copy
