"""Simulated device life: when each demo device is unplugged, busy or offline, and how slow it is.

A schedule is drawn once from a seed (same seed, same fleet) and is a pure function of elapsed
demo time, so the demo's live display, the agents' conditions and the tests all read one truth.

Time is compressed: a demo lasts minutes, so a "night on the charger" is tens of seconds. Each
device gets
- a speed: most devices run at full speed, about one in five is an old board 5-10x slower;
- unplugged windows (not charging -> the agent's policy says UNPLUGGED and training stops);
- busy windows (other processes use the CPU -> policy says BUSY);
- dropouts (the device's MQTT link goes away and later returns).
Windows of one kind never overlap each other; kinds may overlap (a busy device can be unplugged).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = [
    "DeviceLife",
    "LifeParams",
    "LifeState",
    "Window",
    "WindowKind",
    "draw_fleet_life",
]


class WindowKind(StrEnum):
    UNPLUGGED = "unplugged"
    BUSY = "busy"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Window:
    kind: WindowKind
    start_s: float  # demo time, seconds since the fleet started
    end_s: float

    def covers(self, t: float) -> bool:
        return self.start_s <= t < self.end_s


@dataclass(frozen=True)
class LifeState:
    charging: bool
    busy: bool
    online: bool


@dataclass(frozen=True)
class LifeParams:
    """Shape of a simulated fleet's life. Defaults sized for a ~3 minute demo."""

    horizon_s: float = 600.0  # schedules cover this much demo time; after it devices stay calm
    slow_fraction: float = 0.2  # share of devices that are old, slow boards
    slow_factor: tuple[float, float] = (5.0, 10.0)  # slow boards take 5-10x longer per step
    unplugged_every_s: float = 30.0  # mean gap between unplugged windows
    unplugged_s: tuple[float, float] = (5.0, 20.0)
    busy_every_s: float = 20.0
    busy_s: tuple[float, float] = (2.0, 8.0)
    dropout_fraction: float = 0.3  # share of devices that lose their link at least once
    dropout_every_s: float = 30.0
    offline_s: tuple[float, float] = (4.0, 12.0)
    calm_start_s: float = 2.0  # no windows in the first seconds: let every device join cleanly


@dataclass(frozen=True)
class DeviceLife:
    device_id: str
    slowdown: float  # 1.0 = full speed; 7.0 = every training step takes 7x as long
    windows: tuple[Window, ...]

    def state_at(self, t: float) -> LifeState:
        def active(kind: WindowKind) -> bool:
            return any(w.kind is kind and w.covers(t) for w in self.windows)

        return LifeState(
            charging=not active(WindowKind.UNPLUGGED),
            busy=active(WindowKind.BUSY),
            online=not active(WindowKind.OFFLINE),
        )

    def of_kind(self, kind: WindowKind) -> tuple[Window, ...]:
        return tuple(w for w in self.windows if w.kind is kind)


def _windows(
    rng: np.random.Generator,
    kind: WindowKind,
    every_s: float,
    length_s: tuple[float, float],
    start_s: float,
    horizon_s: float,
    max_count: int | None = None,
) -> list[Window]:
    """Non-overlapping windows: exponential gaps (mean `every_s`), uniform lengths."""
    out: list[Window] = []
    t = start_s + float(rng.exponential(every_s / 2))  # first one sooner: demos are short
    while t < horizon_s and (max_count is None or len(out) < max_count):
        end = t + float(rng.uniform(*length_s))
        out.append(Window(kind, round(t, 3), round(end, 3)))
        t = end + float(rng.exponential(every_s))
    return out


def draw_fleet_life(
    device_ids: list[str], seed: int, params: LifeParams | None = None
) -> list[DeviceLife]:
    """One seeded life per device; the same ids, seed and params give the same fleet."""
    p = params or LifeParams()
    rng = np.random.default_rng([seed, 0x11FE])  # own stream: independent of the data split seed
    n = len(device_ids)
    n_slow = round(n * p.slow_fraction)
    slow = set(rng.choice(n, size=n_slow, replace=False).tolist()) if n_slow else set()
    n_drop = round(n * p.dropout_fraction)
    drop = set(rng.choice(n, size=n_drop, replace=False).tolist()) if n_drop else set()
    lives = []
    for i, device_id in enumerate(device_ids):
        slowdown = round(float(rng.uniform(*p.slow_factor)), 2) if i in slow else 1.0
        windows = _windows(
            rng,
            WindowKind.UNPLUGGED,
            p.unplugged_every_s,
            p.unplugged_s,
            p.calm_start_s,
            p.horizon_s,
        )
        windows += _windows(
            rng, WindowKind.BUSY, p.busy_every_s, p.busy_s, p.calm_start_s, p.horizon_s
        )
        if i in drop:
            # Dropouts are rarer and longer: one or two per device in a demo's horizon.
            windows += _windows(
                rng,
                WindowKind.OFFLINE,
                p.dropout_every_s,
                p.offline_s,
                p.calm_start_s * 2,
                p.horizon_s,
                max_count=2,
            )
        lives.append(DeviceLife(device_id, slowdown, tuple(sorted(windows, key=_start))))
    return lives


def _start(w: Window) -> float:
    return w.start_s
