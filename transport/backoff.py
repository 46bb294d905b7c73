"""Capped exponential back-off with full jitter (AWS architecture blog, "Exponential Backoff And
Jitter"): delay_n = uniform(0, min(cap, initial * 2**n)).

Why jitter: after a broker restart every device of a fleet reconnects; without jitter they all
retry in lock-step and the broker sees synchronized waves. paho's own reconnect_delay_set has no
jitter, so MqttLink runs its own reconnect loop with this.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    initial: float = 0.5
    cap: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.cap:
            raise ValueError(f"need 0 < initial <= cap, got {self.initial}, {self.cap}")

    def ceiling(self) -> float:
        """Upper bound of the next delay (before jitter)."""
        # min() before the power would overflow for long outages; 2**60 covers any cap we use.
        return min(self.cap, self.initial * 2.0 ** min(self.attempt, 60))

    def next_delay(self) -> float:
        delay = self.rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
