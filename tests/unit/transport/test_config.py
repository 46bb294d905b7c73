from __future__ import annotations

from pathlib import Path

import pytest

from protocol.errors import ConfigError
from transport import BrokerConfig, BrokerUrl, ProtocolChoice, parse_broker_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", BrokerUrl("127.0.0.1", 1883, tls=False)),
        ("mqtt://127.0.0.1", BrokerUrl("127.0.0.1", 1883, tls=False)),
        ("mqtts://broker.example.org", BrokerUrl("broker.example.org", 8883, tls=True)),
        ("MQTTS://broker.example.org:8884/", BrokerUrl("broker.example.org", 8884, tls=True)),
        ("mqtt://[::1]:1884", BrokerUrl("::1", 1884, tls=False)),
    ],
)
def test_parse_good_urls(url: str, expected: BrokerUrl) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://127.0.0.1:1883", "scheme"),
        ("tcp://127.0.0.1:1883", "scheme"),
        ("127.0.0.1:1883", "scheme"),
        ("mqtt://user:secret@127.0.0.1", "credentials"),
        ("mqtt://127.0.0.1:99999", "out of range"),
        ("mqtt://127.0.0.1:0", "port 0"),
        ("mqtt://127.0.0.1:1883/fl", "no path"),
        ("mqtt://127.0.0.1:1883?x=1", "no path"),
        ("mqtt://", "no host"),
        ("mqtt://a..b:1883", "bad host"),
        ("", "expected"),
    ],
)
def test_parse_bad_urls(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_broker_url(url)


def test_credentials_never_echoed_from_url() -> None:
    with pytest.raises(ConfigError) as err:
        parse_broker_url("mqtt://dev:hunter2@127.0.0.1")
    assert "hunter2" not in str(err.value)


def test_url_round_trips_through_str() -> None:
    for url in ("mqtt://127.0.0.1:1883", "mqtts://[::1]:8883", "mqtts://b.example:8884"):
        assert str(parse_broker_url(url)) == url


def test_config_defaults_persistent_session_auto_protocol() -> None:
    cfg = BrokerConfig("mqtt://127.0.0.1:1883", "dev-1")
    assert cfg.protocol is ProtocolChoice.AUTO
    assert cfg.clean_start is False and cfg.session_expiry > 0
    assert cfg.endpoint == BrokerUrl("127.0.0.1", 1883, tls=False)


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"client_id": ""}, "client_id"),
        ({"password": "x"}, "without a username"),
        ({"cert_file": Path("c.crt")}, "cert_file and key_file"),
        ({"ca_file": Path("ca.crt")}, "plain mqtt"),
        ({"keepalive": 1}, "keepalive"),
        ({"max_packet_size": 10}, "max_packet_size"),
        ({"protocol": "v4"}, "protocol"),
        ({"backoff_initial": 10.0, "backoff_max": 1.0}, "backoff"),
        ({"connack_timeout": 0.0}, "connack_timeout"),
    ],
)
def test_config_refuses_inconsistent_settings(kwargs: dict[str, object], complaint: str) -> None:
    args: dict[str, object] = {"url": "mqtt://127.0.0.1:1883", "client_id": "dev-1", **kwargs}
    with pytest.raises(ConfigError, match=complaint):
        BrokerConfig(**args)  # type: ignore[arg-type]
