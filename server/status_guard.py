"""What the server tolerates on a device's status topic (retained; read by dashboards).

Mosquitto has no per-topic size limit: its max_packet_size (8 MiB in the production config)
must fit a whole model, so a device could park megabytes retained on its status topic (issue
15). The server reads every status topic and clears (empty retained publish) any status that
is larger than `STATUS_MAX_BYTES` or does not decode as a DeviceStatus.
"""

from __future__ import annotations

from protocol.errors import ProtocolError
from protocol.messages import decode_status

__all__ = ["STATUS_MAX_BYTES", "status_is_acceptable"]

STATUS_MAX_BYTES = 16 * 1024  # an agent's status is about 300 bytes; 50x headroom


def status_is_acceptable(payload: bytes) -> bool:
    if len(payload) > STATUS_MAX_BYTES:  # cheapest first: never decode a big one
        return False
    try:
        decode_status(payload, STATUS_MAX_BYTES)
    except ProtocolError:
        return False
    return True
