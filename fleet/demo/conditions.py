"""Feed a simulated device life (fleet/demo/life.py) to a real agent through its conditions API.

The agent's policy (agent/policy.py) then does the judging, exactly as on a real device: an
unplugged window reads as `charging=False` with a battery present (UNPLUGGED), a busy window as
another process using most of the CPU (BUSY).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.conditions import Conditions
from fleet.demo.life import DeviceLife, LifeState

__all__ = ["SimulatedConditions"]

_BUSY_CPU = 85.0  # above any sane max_cpu_percent
_IDLE_CPU = 3.0


class SimulatedConditions:
    """A `ConditionsSource` whose answers follow a device's seeded life schedule."""

    def __init__(
        self,
        life: DeviceLife,
        start: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.life = life
        self._start = start
        self._clock = clock

    def elapsed(self) -> float:
        return self._clock() - self._start

    def state(self) -> LifeState:
        return self.life.state_at(self.elapsed())

    def read(self) -> Conditions:
        s = self.state()
        return Conditions(
            battery_percent=90.0,  # present, so unplugged really means "on battery"
            charging=s.charging,
            cpu_percent=_BUSY_CPU if s.busy else _IDLE_CPU,
            temperature_c=45.0,
            metered=False,
        )
