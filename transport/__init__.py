"""MQTT plumbing shared by agent and server (paho-mqtt 2.x): connect, limits, reconnect.

Only moves bytes: it knows topics and sizes, never message contents.
"""

from transport.backoff import Backoff
from transport.config import BrokerConfig, BrokerUrl, ProtocolChoice, parse_broker_url
from transport.errors import OversizeMessage, PublishFailed, PublishRefused
from transport.handles import IncomingMessage, LinkState, PublishHandle
from transport.limits import publish_packet_size
from transport.link import MqttLink

__all__ = [
    "Backoff",
    "BrokerConfig",
    "BrokerUrl",
    "IncomingMessage",
    "LinkState",
    "MqttLink",
    "OversizeMessage",
    "ProtocolChoice",
    "PublishFailed",
    "PublishHandle",
    "PublishRefused",
    "parse_broker_url",
    "publish_packet_size",
]
