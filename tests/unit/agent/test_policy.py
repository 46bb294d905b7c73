"""Eligibility policy: a table of conditions with hand-written decisions, then hysteresis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.conditions import Conditions
from agent.config import PolicyLimits
from agent.policy import Decision, Why, decide

LIMITS = PolicyLimits(
    min_battery_percent=50,
    battery_margin=5,
    require_charging=True,
    no_battery_counts_as_charging=True,
    max_cpu_percent=30,
    cpu_margin=10,
    max_temperature_c=70,
    temperature_margin=5,
    allow_metered=False,
)
OK = Decision(True, Why.OK, "idle and powered")


def c(
    battery: float | None = 80.0,
    charging: bool = True,
    cpu: float = 5.0,
    temp: float | None = 45.0,
    metered: bool = False,
) -> Conditions:
    return Conditions(battery, charging, cpu, temp, metered)


# Fresh decisions (no previous one): the margins apply.
TABLE = [
    ("idle, charging, full", c(), OK),
    (
        "battery low while charging",
        c(battery=30),
        Decision(False, Why.BATTERY_LOW, "battery 30% < 55%"),
    ),
    ("unplugged", c(charging=False), Decision(False, Why.UNPLUGGED, "not charging")),
    ("busy", c(cpu=75), Decision(False, Why.BUSY, "cpu 75% > 20%")),
    ("hot", c(temp=80), Decision(False, Why.HOT, "temperature 80C > 65C")),
    ("metered", c(metered=True), Decision(False, Why.METERED, "network is metered")),
    ("no battery, mains hub", c(battery=None, charging=False), OK),
    ("no temperature sensor", c(temp=None), OK),
    # Order: metered is reported before power, power before battery, battery before heat.
    (
        "metered and unplugged",
        c(metered=True, charging=False),
        Decision(False, Why.METERED, "network is metered"),
    ),
    (
        "unplugged and low",
        c(charging=False, battery=10),
        Decision(False, Why.UNPLUGGED, "not charging"),
    ),
    ("low and hot", c(battery=10, temp=90), Decision(False, Why.BATTERY_LOW, "battery 10% < 55%")),
    ("hot and busy", c(temp=90, cpu=90), Decision(False, Why.HOT, "temperature 90C > 65C")),
    ("battery exactly at limit+margin", c(battery=55), OK),
    ("cpu exactly at limit-margin", c(cpu=20), OK),
]


@pytest.mark.parametrize(
    ("conditions", "expected"), [(t[1], t[2]) for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_decision_table(conditions: Conditions, expected: Decision) -> None:
    assert decide(conditions, LIMITS, None) == expected


def test_no_battery_not_counted_as_charging_when_configured() -> None:
    limits = PolicyLimits(no_battery_counts_as_charging=False)
    got = decide(c(battery=None, charging=False), limits, None)
    assert got == Decision(False, Why.UNPLUGGED, "no battery and no mains power")
    assert decide(c(battery=None, charging=True), limits, None).eligible  # USB/mains online


def test_metered_allowed_and_charging_not_required() -> None:
    limits = PolicyLimits(allow_metered=True, require_charging=False)
    assert decide(c(metered=True, charging=False, battery=90), limits, None) == OK


def test_hysteresis_battery_does_not_flap() -> None:
    """A battery wobbling around 50 % starts training once above 55 % and stops below 50 %."""
    trace = [52, 54, 56, 53, 50, 49, 52, 54, 55]
    expected = [False, False, True, True, True, False, False, False, True]
    prev: Decision | None = None
    got = []
    for level in trace:
        prev = decide(c(battery=level), LIMITS, prev)
        got.append(prev.eligible)
    assert got == expected


def test_hysteresis_temperature_and_cpu() -> None:
    prev = decide(c(temp=68), LIMITS, None)
    assert prev.reason is Why.HOT  # 68 > 70 - 5 for a device not yet eligible
    prev = decide(c(temp=64), LIMITS, prev)
    assert prev.eligible
    prev = decide(c(temp=69.9), LIMITS, prev)  # warming while training: still within the limit
    assert prev.eligible
    prev = decide(c(temp=70.1), LIMITS, prev)
    assert prev.reason is Why.HOT
    prev = decide(c(cpu=25), LIMITS, prev)  # still not eligible: cpu 25 > 30 - 10
    assert prev.reason is Why.BUSY
    prev = decide(c(cpu=15), LIMITS, prev)
    assert prev.eligible
    assert decide(c(cpu=29), LIMITS, prev).eligible
    assert decide(c(cpu=31), LIMITS, prev).reason is Why.BUSY


_cond = st.builds(
    Conditions,
    st.one_of(st.none(), st.floats(0, 100)),
    st.booleans(),
    st.floats(0, 100),
    st.one_of(st.none(), st.floats(-20, 120)),
    st.booleans(),
)


@given(_cond)
def test_property_hysteresis_only_ever_helps_an_eligible_device(cond: Conditions) -> None:
    fresh = decide(cond, LIMITS, None)
    # A device that was not eligible is judged exactly like a fresh one (margins apply) ...
    assert decide(cond, LIMITS, Decision(False, Why.BUSY)) == fresh
    # ... and one that was eligible is judged by looser limits: it can only stay eligible longer.
    if fresh.eligible:
        assert decide(cond, LIMITS, OK).eligible
    # The reason is OK exactly when eligible.
    assert fresh.eligible == (fresh.reason is Why.OK)
