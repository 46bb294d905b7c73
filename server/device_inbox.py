"""Where a message on a device topic goes: the rules every topic a device can publish on obeys.

Sans I/O: `route` returns what to do (a `Route`); the service loop does it. Cheapest first:

    topic          parse; another fleet or an empty payload (a clear, ours included): drop
    status         latest-wins, checked at the device's rate (server/status_guard.py); clear if bad
    retained       update or secagg_up parked on the broker, not sent now: it would come back at
                   every server start (a ghost cohort, a replayed update) and outlive a revoked
                   device, so it is ignored and cleared
    secagg_up      size for this device's step (server/secagg.py `max_bytes_for`), then the
                   per-device rate limit, before anything decodes it
    update         the core: rate limit, size, then admission (server/admission.py); its
                   refusals are Acked (server/refusal_acks.py bounds those)

Rate limits are per device and per topic, with the update topic's settings ([admission]
rate_per_minute, rate_burst): an honest agent sends a few status and cohort messages per round.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import ProtocolError, Reason
from protocol.topics import DeviceTopicKind, parse_device_topic, status_topic
from server.admission import AdmissionLimits
from server.rate_limit import DeviceRateLimiter
from server.secagg import CohortRunner
from server.status_guard import StatusGuard
from transport import IncomingMessage

__all__ = ["Action", "DeviceInbox", "Route"]

_log = logging.getLogger(__name__)


class Action(StrEnum):
    UPDATE = "update"  # to ServerCore.submit
    SECAGG = "secagg"  # to CohortRunner.handle
    CLEAR = "clear"  # publish an empty retained message on `topic`
    DROP = "drop"  # nothing to send; counted under `reason` when there is one


@dataclass(frozen=True, slots=True)
class Route:
    action: Action
    device_id: str = ""
    topic: str = ""
    reason: Reason | None = None  # counted in fleetlearn_updates_rejected_total
    why: str = ""  # for the log


_DROP = Route(Action.DROP)


def _limiter(limits: AdmissionLimits) -> DeviceRateLimiter | None:
    if limits.rate_per_minute is None:
        return None
    return DeviceRateLimiter(limits.rate_per_minute, limits.rate_burst)


class DeviceInbox:
    def __init__(self, fleet: str, limits: AdmissionLimits, secagg: CohortRunner | None) -> None:
        self.fleet = fleet
        self._secagg = secagg
        self._status = StatusGuard(_limiter(limits))
        self._secagg_rate = _limiter(limits)

    def route(self, message: IncomingMessage, now: float) -> Route:
        try:
            topic = parse_device_topic(message.topic)
        except ProtocolError as exc:  # no device to answer: count and drop
            _log.warning("dropping message on %r: %s", message.topic[:120], exc)
            return Route(Action.DROP, reason=exc.reason)
        if topic.fleet != self.fleet or not message.payload:
            return _DROP
        device, kind = topic.device_id, topic.kind
        if kind is DeviceTopicKind.STATUS:
            if self._status.receive(device, message.payload, now):
                return Route(Action.CLEAR, device, message.topic, Reason.FIELD, "invalid status")
            return _DROP
        if kind not in (DeviceTopicKind.UPDATE, DeviceTopicKind.SECAGG_UP):
            return _DROP  # the server's own topics (ack, secagg_down): nothing for it to do
        if message.retained:
            why = f"retained {kind.value} ignored"
            return Route(Action.CLEAR, device, message.topic, Reason.FIELD, why)
        if kind is DeviceTopicKind.UPDATE:
            return Route(Action.UPDATE, device, message.topic)
        if self._secagg is None:
            return _DROP
        cap = self._secagg.max_bytes_for(device)
        if len(message.payload) > cap:  # before the decoder: size is the cheapest check
            _log.debug("secagg_up from %s: %d bytes > %d", device, len(message.payload), cap)
            return Route(Action.DROP, device, message.topic, Reason.OVERSIZE)
        if self._secagg_rate is not None and not self._secagg_rate.take(device, now).allowed:
            return Route(Action.DROP, device, message.topic, Reason.RATE_LIMITED)
        return Route(Action.SECAGG, device, message.topic)

    def sweep(self, now: float) -> list[Route]:
        """Status topics to clear now: pending statuses of flooding devices, checked late."""
        return [
            Route(Action.CLEAR, d, status_topic(self.fleet, d), Reason.FIELD, "invalid status")
            for d in self._status.sweep(now)
        ]
