"""Every MQTT topic fleetlearn uses is built and parsed here, and ids are validated only here.

    fl/<fleet>/model/<model_id>/global       retained signed ModelOffer (server -> devices)
    fl/<fleet>/model/<model_id>/serving      retained signed ModelOffer of the serving average
                                             (for devices' inference; server/serving.py)
    fl/<fleet>/model/<model_id>/delta        retained signed ModelDelta: the latest version as a
                                             step from the one before (protocol/downlink.py)
    fl/<fleet>/model/<model_id>/serving_delta  the same for the serving model
    fl/<fleet>/device/<device_id>/update     ClientUpdate (device -> server)
    fl/<fleet>/device/<device_id>/ack        Ack (server -> device)
    fl/<fleet>/device/<device_id>/status     retained DeviceStatus + last will (device)
    fl/<fleet>/device/<device_id>/secagg_up  secure-aggregation messages (device -> server)
    fl/<fleet>/device/<device_id>/secagg_down  cohort messages addressed to this device only

The broker's ACL makes the topic the identity: the server trusts the device id in the topic, and
rejects a payload whose own device id disagrees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import ProtocolError, Reason

__all__ = [
    "ROOT",
    "DeviceTopic",
    "DeviceTopicKind",
    "ack_topic",
    "device_subscription",
    "global_model_subscription",
    "global_model_topic",
    "model_delta_subscription",
    "model_delta_topic",
    "parse_device_topic",
    "parse_global_model_topic",
    "secagg_down_topic",
    "secagg_up_topic",
    "serving_delta_subscription",
    "serving_delta_topic",
    "serving_model_subscription",
    "serving_model_topic",
    "shared_update_subscription",
    "status_topic",
    "update_subscription",
    "update_topic",
    "validate_device_id",
    "validate_fleet",
    "validate_model_id",
]

ROOT = "fl"

# Letters, digits, '_', '-', '.'; never '/', '+', '#', '$' or '%' (they would change what an MQTT
# filter or a Mosquitto ACL pattern means). Starts with a letter or digit.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class DeviceTopicKind(StrEnum):
    UPDATE = "update"
    ACK = "ack"
    STATUS = "status"
    SECAGG_UP = "secagg_up"
    SECAGG_DOWN = "secagg_down"


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    fleet: str
    device_id: str
    kind: DeviceTopicKind


def _validate(value: object, pattern: re.Pattern[str], what: str, reason: Reason) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise ProtocolError(
            reason,
            f"invalid {what} {shown!r}: use letters, digits, '_', '.', '-' "
            f"(starting with a letter or digit, pattern {pattern.pattern})",
        )
    return value


def validate_device_id(device_id: object) -> str:
    return _validate(device_id, _ID, "device id", Reason.BAD_DEVICE_ID)


def validate_fleet(fleet: object) -> str:
    return _validate(fleet, _ID, "fleet", Reason.FIELD)


def validate_model_id(model_id: object) -> str:
    return _validate(model_id, _MODEL_ID, "model id", Reason.UNKNOWN_MODEL)


def global_model_topic(fleet: str, model_id: str) -> str:
    return f"{ROOT}/{validate_fleet(fleet)}/model/{validate_model_id(model_id)}/global"


def global_model_subscription(fleet: str) -> str:
    return f"{ROOT}/{validate_fleet(fleet)}/model/+/global"


def model_delta_topic(fleet: str, model_id: str) -> str:
    return f"{ROOT}/{validate_fleet(fleet)}/model/{validate_model_id(model_id)}/delta"


def model_delta_subscription(fleet: str) -> str:
    return f"{ROOT}/{validate_fleet(fleet)}/model/+/delta"


def serving_delta_topic(fleet: str, model_id: str) -> str:
    return f"{ROOT}/{validate_fleet(fleet)}/model/{validate_model_id(model_id)}/serving_delta"


def serving_delta_subscription(fleet: str) -> str:
    return f"{ROOT}/{validate_fleet(fleet)}/model/+/serving_delta"


def serving_model_topic(fleet: str, model_id: str) -> str:
    return f"{ROOT}/{validate_fleet(fleet)}/model/{validate_model_id(model_id)}/serving"


def serving_model_subscription(fleet: str) -> str:
    return f"{ROOT}/{validate_fleet(fleet)}/model/+/serving"


def _device_topic(fleet: str, device_id: str, kind: DeviceTopicKind) -> str:
    return f"{ROOT}/{validate_fleet(fleet)}/device/{validate_device_id(device_id)}/{kind.value}"


def update_topic(fleet: str, device_id: str) -> str:
    return _device_topic(fleet, device_id, DeviceTopicKind.UPDATE)


def ack_topic(fleet: str, device_id: str) -> str:
    return _device_topic(fleet, device_id, DeviceTopicKind.ACK)


def status_topic(fleet: str, device_id: str) -> str:
    return _device_topic(fleet, device_id, DeviceTopicKind.STATUS)


def secagg_up_topic(fleet: str, device_id: str) -> str:
    return _device_topic(fleet, device_id, DeviceTopicKind.SECAGG_UP)


def secagg_down_topic(fleet: str, device_id: str) -> str:
    return _device_topic(fleet, device_id, DeviceTopicKind.SECAGG_DOWN)


def device_subscription(fleet: str, kind: DeviceTopicKind) -> str:
    """Filter matching one kind of topic for every device of a fleet (the server's view)."""
    return f"{ROOT}/{validate_fleet(fleet)}/device/+/{kind.value}"


def update_subscription(fleet: str) -> str:
    return device_subscription(fleet, DeviceTopicKind.UPDATE)


def shared_update_subscription(fleet: str, group: str) -> str:
    """MQTT v5 shared subscription: several server instances split the update stream."""
    return f"$share/{validate_fleet(group)}/{update_subscription(fleet)}"


def parse_device_topic(topic: str) -> DeviceTopic:
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != ROOT or parts[2] != "device":
        raise ProtocolError(Reason.FIELD, f"not a device topic: {topic!r}")
    try:
        kind = DeviceTopicKind(parts[4])
    except ValueError:
        raise ProtocolError(Reason.FIELD, f"unknown device topic kind in {topic!r}") from None
    return DeviceTopic(validate_fleet(parts[1]), validate_device_id(parts[3]), kind)


def parse_global_model_topic(topic: str) -> tuple[str, str]:
    """Return (fleet, model_id) of a global model topic."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != ROOT or parts[2] != "model" or parts[4] != "global":
        raise ProtocolError(Reason.FIELD, f"not a global model topic: {topic!r}")
    return validate_fleet(parts[1]), validate_model_id(parts[3])
