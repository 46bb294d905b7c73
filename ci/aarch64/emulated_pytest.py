"""pytest plugin for runs under qemu-user (`-p emulated_pytest`): emulation is ~250x slower.

Hypothesis's 200 ms per-example deadline would fail on speed alone, and its health check
would call the data generation too slow, so both are off; fewer examples keep the job in CI's
time. What is checked (results, warnings as errors, reason codes) is unchanged.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__: list[str] = []

settings.register_profile(
    "emulated",
    deadline=None,
    max_examples=int(os.environ.get("FLEETLEARN_EMULATED_EXAMPLES", "20")),
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("emulated")
