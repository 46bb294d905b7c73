"""What the device is doing right now: power, CPU load, temperature, network cost.

One small interface, `ConditionsSource.read() -> Conditions`, with a Linux implementation that
reads sysfs and psutil and a `FakeConditions` for tests. The policy (agent/policy.py) turns a
`Conditions` into a decision; nothing here judges.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

from agent.config import ConditionsSettings

__all__ = ["Conditions", "ConditionsSource", "FakeConditions", "LinuxConditions"]


@dataclass(frozen=True)
class Conditions:
    battery_percent: float | None  # None: the device has no battery
    charging: bool  # AC or USB supply online, or the battery reports Charging/Full
    cpu_percent: float  # CPU used by other processes (not this agent), 0..100, over a window
    temperature_c: float | None  # hottest thermal zone; None: no sensor
    metered: bool

    def as_status(self) -> dict[str, float | bool | None]:
        return dict(asdict(self))


class ConditionsSource(Protocol):
    def read(self) -> Conditions: ...


class FakeConditions:
    """Conditions set by a test; `read()` returns whatever was set last (and counts reads)."""

    def __init__(self, conditions: Conditions | None = None) -> None:
        self.current = conditions or Conditions(
            battery_percent=None, charging=True, cpu_percent=0.0, temperature_c=40.0, metered=False
        )
        self.reads = 0

    def set(self, **changes: float | bool | None) -> None:
        self.current = replace(self.current, **changes)  # type: ignore[arg-type]

    def read(self) -> Conditions:
        self.reads += 1
        return self.current


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def read_power(power_dir: Path) -> tuple[float | None, bool]:
    """(battery percent or None, charging) from /sys/class/power_supply.

    Charging means a Mains/USB supply is online, or a battery says Charging or Full (some laptops
    report no Mains entry). Several batteries: the lowest capacity counts.
    """
    capacities: list[float] = []
    charging = False
    entries = sorted(power_dir.iterdir()) if power_dir.is_dir() else []
    for entry in entries:
        kind = _read_text(entry / "type")
        if kind == "Battery":
            if _read_text(entry / "present") == "0":
                continue
            cap = _read_text(entry / "capacity")
            if cap is not None and cap.lstrip("-").isdigit():
                capacities.append(float(cap))
            if _read_text(entry / "status") in ("Charging", "Full"):
                charging = True
        elif (
            kind is not None
            and (kind == "Mains" or kind.startswith("USB"))
            and _read_text(entry / "online") == "1"
        ):
            charging = True
    return (min(capacities) if capacities else None), charging


def read_temperature(thermal_dir: Path) -> float | None:
    """Hottest /sys/class/thermal/thermal_zone*/temp in degrees C (sysfs gives millidegrees)."""
    temps: list[float] = []
    zones = sorted(thermal_dir.glob("thermal_zone*")) if thermal_dir.is_dir() else []
    for zone in zones:
        raw = _read_text(zone / "temp")
        if raw is not None and raw.lstrip("-").isdigit():
            temps.append(int(raw) / 1000.0)
    return max(temps) if temps else None


class LinuxConditions:
    """sysfs + psutil. Reads are cached for `min_period_s`, so a trainer that asks between every
    step (agent/runtime.py) costs a few syscalls per fraction of a second, not per step."""

    def __init__(
        self,
        settings: ConditionsSettings,
        *,
        min_period_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import psutil  # only here: tests with FakeConditions need no psutil

        self._psutil = psutil
        self._settings = settings
        self._min_period_s = min_period_s
        self._clock = clock
        self._self = psutil.Process()
        self._ncpu = psutil.cpu_count() or 1
        self._window: list[tuple[float, float]] = []  # (time, other processes' cpu %)
        psutil.cpu_percent(None)  # the first call primes the counters
        self._self.cpu_percent(None)
        self._cached: tuple[float, Conditions] | None = None

    def _cpu_others(self, now: float) -> float:
        total = self._psutil.cpu_percent(None)  # whole machine since the last call, 0..100
        mine = self._self.cpu_percent(None) / self._ncpu  # ours, rescaled to the machine
        # Our own training must not make the device look busy and stop itself.
        self._window.append((now, max(0.0, total - mine)))
        horizon = now - self._settings.cpu_window_s
        self._window = [(t, v) for t, v in self._window if t >= horizon]
        return sum(v for _, v in self._window) / len(self._window)

    def _metered(self) -> bool:
        if self._settings.metered:
            return True
        path = self._settings.metered_file
        return path is not None and path.exists()

    def read(self) -> Conditions:
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self._min_period_s:
            return self._cached[1]
        battery, charging = read_power(self._settings.power_supply_dir)
        conditions = Conditions(
            battery_percent=battery,
            charging=charging,
            cpu_percent=round(self._cpu_others(now), 1),
            temperature_c=read_temperature(self._settings.thermal_dir),
            metered=self._metered(),
        )
        self._cached = (now, conditions)
        return conditions
