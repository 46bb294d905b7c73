"""Where and how to reach the broker: `BrokerConfig` and `parse_broker_url`.

Secrets (passwords, keys) live in fields, never in the URL: a URL ends up in logs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from protocol.errors import ConfigError

__all__ = ["BrokerConfig", "BrokerUrl", "ProtocolChoice", "parse_broker_url"]

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_MAX_CLIENT_ID = 128  # MQTT 3.1.1 only promises 23; Mosquitto and EMQX accept far more


class ProtocolChoice(StrEnum):
    AUTO = "auto"  # MQTT v5, falling back to 3.1.1 when the broker refuses v5 (amqtt does)
    V5 = "v5"
    V311 = "v311"


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """`mqtt://host[:1883]` or `mqtts://host[:8883]` -> BrokerUrl; anything else: ConfigError."""
    if not isinstance(url, str) or not url or len(url) > 512:
        raise ConfigError(
            f"broker url: expected 'mqtt://host:port' or 'mqtts://host:port', got {url!r:.80}"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"broker url {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError(f"broker url {url!r}: scheme must be 'mqtt' or 'mqtts', not {scheme!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"broker url for host {parts.hostname!r}: put credentials in the username/password "
            "settings, not in the url (urls end up in logs)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"broker url {url!r}: no path, query or fragment allowed")
    host = parts.hostname
    if not host:
        raise ConfigError(f"broker url {url!r}: no host")
    if port == 0:
        raise ConfigError(f"broker url {url!r}: port 0 is not a port")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(label and len(label) <= 63 for label in host.split(".")):
            raise ConfigError(f"broker url {url!r}: bad host name {host!r}") from None
    return BrokerUrl(host=host, port=port or _DEFAULT_PORTS[scheme], tls=scheme == "mqtts")


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """One MQTT connection. Validated on construction (ConfigError names the field)."""

    url: str  # "mqtt://127.0.0.1:1883" | "mqtts://host:8883"
    client_id: str
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None  # None with mqtts: the system's trust store
    cert_file: Path | None = None  # client certificate (cert identity listeners)
    key_file: Path | None = None
    keepalive: int = 30  # seconds; a dead link is noticed within ~1.5x this
    max_packet_size: int | None = (
        None  # the broker's configured limit; a v5 CONNACK value wins if smaller
    )
    protocol: ProtocolChoice | str = ProtocolChoice.AUTO
    clean_start: bool = False  # False = persistent session: QoS 1 messages queue while we are away
    session_expiry: int = (
        7 * 24 * 3600
    )  # v5 SessionExpiryInterval; matches persistent_client_expiration
    connack_timeout: float = 3.0  # no CONNACK by then: drop (with "auto" on v5: try 3.1.1)
    backoff_initial: float = 0.5  # reconnect back-off: first delay, seconds
    backoff_max: float = 60.0  # cap: a fleet of thousands must not hammer a recovering broker

    def __post_init__(self) -> None:
        parsed = parse_broker_url(self.url)
        if (
            not self.client_id
            or len(self.client_id) > _MAX_CLIENT_ID
            or not self.client_id.isprintable()
        ):
            raise ConfigError(
                f"broker client_id: 1..{_MAX_CLIENT_ID} printable characters, "
                f"got {self.client_id!r:.80}"
            )
        if self.password is not None and self.username is None:
            raise ConfigError("broker password: set without a username")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("broker cert_file and key_file: set both or neither")
        if not parsed.tls and (self.ca_file or self.cert_file):
            raise ConfigError(
                f"broker url {self.url!r}: TLS files given for a plain mqtt:// url (use mqtts://)"
            )
        if not 5 <= self.keepalive <= 65535:
            raise ConfigError(f"broker keepalive: 5..65535 seconds, got {self.keepalive}")
        if self.max_packet_size is not None and self.max_packet_size < 1024:
            raise ConfigError(
                f"broker max_packet_size: at least 1024 bytes, got {self.max_packet_size}"
            )
        try:
            object.__setattr__(self, "protocol", ProtocolChoice(self.protocol))
        except ValueError:
            raise ConfigError(
                f"broker protocol: 'auto', 'v5' or 'v311', got {self.protocol!r}"
            ) from None
        if self.session_expiry < 0:
            raise ConfigError(f"broker session_expiry: >= 0 seconds, got {self.session_expiry}")
        if not 0 < self.connack_timeout <= 120:
            raise ConfigError(f"broker connack_timeout: 0..120 s, got {self.connack_timeout}")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ConfigError("broker backoff: need 0 < backoff_initial <= backoff_max")

    @property
    def endpoint(self) -> BrokerUrl:
        return parse_broker_url(self.url)
