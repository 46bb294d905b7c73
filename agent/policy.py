"""Eligibility policy: may this device train right now? A pure function, with hysteresis.

Checks run in a fixed order and the first failing one is the reason (metered, power, battery,
temperature, CPU). Hysteresis: a device that is eligible stays eligible while each value is within
the plain limit; a device that is not must clear the limit by its margin (battery above
``min + margin``, temperature below ``max - margin``, CPU below ``max - margin``). A battery
hovering at the threshold therefore does not start and stop training every few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agent.conditions import Conditions
from agent.config import PolicyLimits

__all__ = ["Decision", "Why", "decide"]


class Why(StrEnum):
    OK = "ok"
    METERED = "metered"  # network is metered and metered uploads are not allowed
    UNPLUGGED = "unplugged"  # not charging (or no battery and that is not counted as charging)
    BATTERY_LOW = "battery_low"
    HOT = "hot"
    BUSY = "busy"  # other processes use the CPU


@dataclass(frozen=True)
class Decision:
    eligible: bool
    reason: Why
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


def decide(conditions: Conditions, limits: PolicyLimits, previous: Decision | None) -> Decision:
    """Decide from conditions and limits; `previous` (the last decision) selects the thresholds."""
    c, lim = conditions, limits
    # Eligible before: plain limits keep it eligible. Not eligible: limits tightened by the margin.
    keep = previous is not None and previous.eligible
    if c.metered and not lim.allow_metered:
        return Decision(False, Why.METERED, "network is metered")
    no_battery = c.battery_percent is None
    powered = c.charging or (no_battery and lim.no_battery_counts_as_charging)
    if lim.require_charging and not powered:
        detail = "no battery and no mains power" if no_battery else "not charging"
        return Decision(False, Why.UNPLUGGED, detail)
    if c.battery_percent is not None:
        need = lim.min_battery_percent + (0.0 if keep else lim.battery_margin)
        if c.battery_percent < need:
            return Decision(False, Why.BATTERY_LOW, f"battery {c.battery_percent:g}% < {need:g}%")
    if c.temperature_c is not None:
        ceiling = lim.max_temperature_c - (0.0 if keep else lim.temperature_margin)
        if c.temperature_c > ceiling:
            return Decision(False, Why.HOT, f"temperature {c.temperature_c:g}C > {ceiling:g}C")
    cpu_ceiling = lim.max_cpu_percent - (0.0 if keep else lim.cpu_margin)
    if c.cpu_percent > cpu_ceiling:
        return Decision(False, Why.BUSY, f"cpu {c.cpu_percent:g}% > {cpu_ceiling:g}%")
    return Decision(True, Why.OK, "idle and powered")
