"""What the server tolerates on a device's status topic (retained; read by dashboards).

Mosquitto has no per-topic size limit: its max_packet_size (8 MiB in the production config)
must fit a whole model, so a device could park megabytes retained on its status topic (issue
15). The server reads every status topic and clears (empty retained publish) any status that
is larger than `STATUS_MAX_BYTES`, does not decode as a DeviceStatus, or names another device.

A status is the device's latest word, so a flood is coalesced rather than refused: each device
has a token bucket (server/rate_limit.py, the update topic's settings); a status that finds a
token is checked at once, one that finds none replaces the device's pending status, which is
checked when a token is back (`sweep`). Decoding and clearing therefore cost at most the rate
limit per device, and the last status of a flood is still checked: garbage is never left parked.
"""

from __future__ import annotations

from protocol.errors import ProtocolError
from protocol.messages import DeviceStatus, decode_status
from server.rate_limit import DeviceRateLimiter

__all__ = ["STATUS_MAX_BYTES", "StatusGuard", "acceptable_status", "status_is_acceptable"]

STATUS_MAX_BYTES = 16 * 1024  # an agent's status is about 300 bytes; 50x headroom


def acceptable_status(payload: bytes, device_id: str) -> DeviceStatus | None:
    """The status, if small, decodable, and about the device its topic names (the broker's
    grant makes the topic the identity; a dashboard must not see another device's id)."""
    if len(payload) > STATUS_MAX_BYTES:  # cheapest first: never decode a big one
        return None
    try:
        status = decode_status(payload, STATUS_MAX_BYTES)
    except ProtocolError:
        return None
    return status if status.device_id == device_id else None


def status_is_acceptable(payload: bytes, device_id: str) -> bool:
    return acceptable_status(payload, device_id) is not None


class StatusGuard:
    """Per device: check now if the bucket allows, else keep the latest for `sweep`."""

    def __init__(self, limiter: DeviceRateLimiter | None) -> None:
        self._limiter = limiter  # None: every status is checked at once
        # device -> its latest unchecked status (None: oversize, known bad without decoding)
        self._pending: dict[str, bytes | None] = {}

    def receive(self, device_id: str, payload: bytes, now: float) -> bool:
        """True when the device's status topic must be cleared now."""
        if self._limiter is None or self._limiter.take(device_id, now).allowed:
            self._pending.pop(device_id, None)
            return not status_is_acceptable(payload, device_id)
        self._pending[device_id] = payload if len(payload) <= STATUS_MAX_BYTES else None
        return False

    def sweep(self, now: float) -> list[str]:
        """Devices whose pending status, checked now that they have a token, must be cleared."""
        if not self._pending or self._limiter is None:
            return []
        bad = []
        for device_id in list(self._pending):
            if self._limiter.take(device_id, now).allowed:
                payload = self._pending.pop(device_id)
                if payload is None or not status_is_acceptable(payload, device_id):
                    bad.append(device_id)
        return bad
