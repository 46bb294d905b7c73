"""Simulated device profiles: heavy-tailed compute speed, stragglers, bandwidth, availability.

Speed is lognormal (a heavy right tail) and a `straggler_fraction` of devices is a further
`straggler_slowdown` times slower (old phones, throttled boards). Bandwidth is lognormal too.
Availability is a set of windows in virtual seconds since the run started: a daily pattern (most
devices charge and idle at night; some also during the day), always-on, or a trace file.
Every draw comes from one seeded generator, so a fleet is a pure function of (config, seed).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

__all__ = ["Availability", "DeviceProfile", "FleetConfig", "Windows", "daily_windows", "make_fleet"]

DAY_S = 86_400.0
HOUR_S = 3_600.0


class Availability(Enum):
    DAILY = "daily"  # a night window each day, plus sometimes a short daytime one
    ALWAYS = "always"  # eligible for the whole run (unbiased-comparison tests)


@dataclass(frozen=True, slots=True)
class Windows:
    """Sorted, disjoint [start, end) intervals (virtual seconds) when a device is eligible."""

    intervals: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        prev_end = -math.inf
        for start, end in self.intervals:
            if not start < end or start < prev_end:
                raise ValueError(f"windows must be sorted, disjoint, start < end: {self.intervals}")
            prev_end = end

    def end_of(self, t: float) -> float | None:
        """The end of the window holding time t, or None when the device is not eligible at t."""
        i = bisect.bisect_right(self.intervals, (t, math.inf)) - 1
        if i >= 0 and self.intervals[i][0] <= t < self.intervals[i][1]:
            return self.intervals[i][1]
        return None

    @staticmethod
    def merged(raw: Sequence[tuple[float, float]]) -> Windows:
        """Union of possibly overlapping intervals."""
        out: list[tuple[float, float]] = []
        for start, end in sorted(raw):
            if out and start <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], end))
            else:
                out.append((start, end))
        return Windows(tuple(out))


@dataclass(frozen=True)
class FleetConfig:
    median_s_per_sample: float = 1.0  # virtual compute seconds per training sample, median device
    speed_sigma: float = 0.6  # lognormal sigma of compute time: a heavy right tail
    straggler_fraction: float = 0.15  # the issue asks for 10-20% stragglers ...
    straggler_slowdown: float = 10.0  # ... about 10x slower
    median_uplink_bps: float = 32_000.0  # bytes/s (256 kbit/s: cellular/LPWAN-class gateways)
    bandwidth_sigma: float = 0.8
    downlink_factor: float = 4.0  # downlinks are usually faster than uplinks
    dropout_p: float = 0.05  # chance a session dies mid-training (app killed, reboot)
    availability: Availability = Availability.DAILY
    start_hour: float = 22.0  # local time of day at virtual t = 0
    day_window_p: float = 0.3  # chance of a daytime charging window on a given day

    def __post_init__(self) -> None:
        if not self.median_s_per_sample > 0 or not self.median_uplink_bps > 0:
            raise ValueError("median compute time and bandwidth must be > 0")
        if not 0.0 <= self.straggler_fraction <= 1.0 or not 0.0 <= self.dropout_p < 1.0:
            raise ValueError("straggler_fraction must be in [0, 1] and dropout_p in [0, 1)")
        if self.straggler_slowdown < 1.0 or self.speed_sigma < 0 or self.bandwidth_sigma < 0:
            raise ValueError("straggler_slowdown >= 1 and sigmas >= 0")


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    index: int
    s_per_sample: float  # virtual compute seconds per training sample
    uplink_bps: float  # bytes per virtual second
    downlink_bps: float
    dropout_p: float
    straggler: bool
    windows: Windows


def daily_windows(
    rng: np.random.Generator, duration_s: float, start_hour: float, day_window_p: float
) -> Windows:
    """A night window each day (starts 20:00-24:00, lasts 5-9 h), sometimes a 0.5-2 h day one."""
    raw: list[tuple[float, float]] = []
    offset = start_hour * HOUR_S  # local time-of-day of t = 0
    for day in range(-1, int(duration_s // DAY_S) + 2):
        base = day * DAY_S - offset  # virtual time of local midnight starting that day
        night = base + rng.uniform(20.0, 24.0) * HOUR_S
        raw.append((night, night + rng.uniform(5.0, 9.0) * HOUR_S))
        if rng.random() < day_window_p:
            start = base + rng.uniform(8.0, 18.0) * HOUR_S
            raw.append((start, start + rng.uniform(0.5, 2.0) * HOUR_S))
    clipped = [(max(s, 0.0), min(e, duration_s)) for s, e in raw if e > 0 and s < duration_s]
    return Windows.merged([(s, e) for s, e in clipped if e > s])


def make_fleet(
    num_devices: int,
    config: FleetConfig,
    duration_s: float,
    seed: int,
    trace: Sequence[Windows] | None = None,
) -> list[DeviceProfile]:
    """Draw `num_devices` profiles; `trace` (one Windows per device) overrides availability."""
    if num_devices < 1:
        raise ValueError("num_devices must be >= 1")
    if trace is not None and len(trace) != num_devices:
        raise ValueError(f"trace has {len(trace)} devices, fleet has {num_devices}")
    rng = np.random.default_rng([seed, 0x5EED])
    speed = config.median_s_per_sample * rng.lognormal(0.0, config.speed_sigma, num_devices)
    n_strag = round(config.straggler_fraction * num_devices)
    stragglers = np.zeros(num_devices, bool)
    stragglers[rng.permutation(num_devices)[:n_strag]] = True
    speed = np.where(stragglers, speed * config.straggler_slowdown, speed)  # (N,) s/sample
    up = config.median_uplink_bps * rng.lognormal(0.0, config.bandwidth_sigma, num_devices)
    fleet = []
    for i in range(num_devices):
        if trace is not None:
            windows = trace[i]
        elif config.availability is Availability.ALWAYS:
            windows = Windows(((0.0, duration_s),))
        else:
            windows = daily_windows(rng, duration_s, config.start_hour, config.day_window_p)
        fleet.append(
            DeviceProfile(
                index=i,
                s_per_sample=float(speed[i]),
                uplink_bps=float(up[i]),
                downlink_bps=float(up[i] * config.downlink_factor),
                dropout_p=config.dropout_p,
                straggler=bool(stragglers[i]),
                windows=windows,
            )
        )
    return fleet
