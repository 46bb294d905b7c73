"""Device lives: seeded, well-formed, and read the same way by every consumer."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import PolicyLimits
from agent.policy import Why, decide
from fleet.demo.conditions import SimulatedConditions
from fleet.demo.life import DeviceLife, LifeParams, Window, WindowKind, draw_fleet_life

IDS = [f"dev-{i:03d}" for i in range(20)]


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    assert draw_fleet_life(IDS, 3) == draw_fleet_life(IDS, 3)
    assert draw_fleet_life(IDS, 3) != draw_fleet_life(IDS, 4)


def test_one_in_five_devices_is_5_to_10x_slower() -> None:
    lives = draw_fleet_life(IDS, 0)
    slow = [life.slowdown for life in lives if life.slowdown != 1.0]
    assert len(slow) == 4  # round(20 * 0.2)
    assert all(5.0 <= s <= 10.0 for s in slow)


def test_dropouts_hit_30_percent_of_devices_at_most_twice() -> None:
    lives = draw_fleet_life(IDS, 0)
    offline = [len(life.of_kind(WindowKind.OFFLINE)) for life in lives]
    assert sum(1 for n in offline if n) <= 6  # round(20 * 0.3) chosen; a late draw may miss
    assert sum(1 for n in offline if n) >= 4
    assert max(offline) <= 2


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 40))
def test_windows_are_ordered_and_of_one_kind_never_overlap(seed: int, n: int) -> None:
    params = LifeParams()
    for life in draw_fleet_life([f"d{i}" for i in range(n)], seed, params):
        for kind in WindowKind:
            ws = life.of_kind(kind)
            assert all(w.start_s < w.end_s for w in ws)
            assert all(a.end_s <= b.start_s for a, b in itertools.pairwise(ws))
            assert all(w.start_s >= params.calm_start_s for w in ws)
        assert not any(not life.state_at(t).online for t in (0.0, 1.0, 1.9))


def test_state_at_reads_windows_half_open() -> None:
    life = DeviceLife(
        "d",
        1.0,
        (
            Window(WindowKind.UNPLUGGED, 10.0, 20.0),
            Window(WindowKind.BUSY, 15.0, 16.0),
            Window(WindowKind.OFFLINE, 30.0, 31.0),
        ),
    )
    assert life.state_at(9.99).charging
    assert not life.state_at(10.0).charging
    assert life.state_at(20.0).charging  # end is exclusive
    assert life.state_at(15.5).busy and not life.state_at(15.5).charging
    assert not life.state_at(30.5).online and life.state_at(31.0).online


def test_the_agents_own_policy_reads_a_simulated_life() -> None:
    life = DeviceLife(
        "d", 1.0, (Window(WindowKind.UNPLUGGED, 10, 20), Window(WindowKind.BUSY, 30, 40))
    )
    now = [0.0]
    cond = SimulatedConditions(life, start=0.0, clock=lambda: now[0])
    limits = PolicyLimits()
    expected = {5.0: Why.OK, 15.0: Why.UNPLUGGED, 35.0: Why.BUSY, 45.0: Why.OK}
    for t, why in expected.items():
        now[0] = t
        assert decide(cond.read(), limits, None).reason is why, t
