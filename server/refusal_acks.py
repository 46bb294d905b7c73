"""Which refusal Acks are sent: a flooding device must not turn into one publish per message.

An accepted update's Ack always goes out (QoS 1: the device deletes the update when it arrives).
A refusal's Ack is advice: an agent that hears nothing re-sends after its ack timeout, which
is also what it does on RATE_LIMITED, and a refusal it does hear is answered again when it
re-sends. So refusals go out at QoS 0, and per device:

    RATE_LIMITED   the first of a streak only; the streak ends with any message the rate
                   limit lets through, so these are bounded by the rate limit itself
    other reasons  from a token bucket: `burst` at once (an honest outbox after an outage),
                   then `per_minute`; the rest are counted in the metrics but not answered

Before this, 80,000 seven-byte messages on one device's update topic made 80,000 QoS 1 Acks;
paho ran out of its 65,535 message ids and the server stopped (outside probe, FACTS.md).
"""

from __future__ import annotations

from protocol.errors import Reason
from protocol.messages import Ack
from server.rate_limit import DeviceRateLimiter

__all__ = ["RefusalAckGate"]


class RefusalAckGate:
    def __init__(
        self, per_minute: float = 60.0, burst: int = 10, *, max_devices: int = 100_000
    ) -> None:
        self._budget = DeviceRateLimiter(per_minute, burst, max_devices=max_devices)
        self._limited: set[str] = set()  # devices in a RATE_LIMITED streak, already told once
        self._max_devices = max_devices

    def allow(self, ack: Ack, now: float) -> bool:
        """Whether to send `ack` now (monotonic seconds); accepted Acks always pass."""
        device = ack.device_id
        if ack.reason is not Reason.RATE_LIMITED:
            self._limited.discard(device)
            return ack.accepted or self._budget.take(device, now).allowed
        if device in self._limited:
            return False
        if len(self._limited) >= self._max_devices:  # bounded: at worst one Ack more each
            self._limited.clear()
        self._limited.add(device)
        return True  # once per streak, and a streak needs a message the limit let through
