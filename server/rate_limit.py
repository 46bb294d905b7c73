"""Per-device admission rate limit: a token bucket per device id, the first admission check.

One device must not be able to fill the aggregator's queue or its log (issue 15, defect 9).
Every message on a device's update topic takes one token, before it is decoded (cheapest
first); with none left the update is refused with Reason.RATE_LIMITED, which agents treat as
"keep it and re-send later", so an honest device that briefly bursts loses nothing.

The bucket holds `burst` tokens and refills at `per_minute / 60` tokens per second. `now` comes
from the caller (monotonic seconds): the limiter reads no clock, and it is not part of the
replayed state, since only accepted updates are logged and replay never re-admits.
Device ids come from topics the broker's ACL ties to enrolled identities, so the table is as
large as the fleet; idle full buckets are dropped once the table passes `max_devices`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeviceRateLimiter", "RateDecision"]


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: float  # seconds until one token is back (0 when allowed)


class DeviceRateLimiter:
    def __init__(self, per_minute: float, burst: int, *, max_devices: int = 100_000) -> None:
        if not per_minute > 0 or burst < 1:
            raise ValueError("per_minute must be > 0 and burst >= 1")
        self.rate = per_minute / 60.0  # tokens per second
        self.burst = float(burst)
        self.max_devices = max_devices
        self._buckets: dict[str, tuple[float, float]] = {}  # device -> (tokens, at)

    def take(self, device_id: str, now: float) -> RateDecision:
        tokens, at = self._buckets.get(device_id, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        if tokens >= 1.0:
            self._store(device_id, tokens - 1.0, now)
            return RateDecision(True, 0.0)
        self._store(device_id, tokens, now)
        return RateDecision(False, (1.0 - tokens) / self.rate)

    def _store(self, device_id: str, tokens: float, now: float) -> None:
        self._buckets[device_id] = (tokens, now)
        if len(self._buckets) > self.max_devices:
            full = [
                d
                for d, (t, at) in self._buckets.items()
                if t + (now - at) * self.rate >= self.burst
            ]
            for d in full:
                del self._buckets[d]
