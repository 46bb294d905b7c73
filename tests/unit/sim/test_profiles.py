from __future__ import annotations

import numpy as np
import pytest

from fleet.sim.profiles import HOUR_S, Availability, FleetConfig, Windows, make_fleet


def test_windows_end_of_by_hand() -> None:
    w = Windows(((0.0, 10.0), (20.0, 30.0)))
    assert w.end_of(0.0) == 10.0
    assert w.end_of(9.99) == 10.0
    assert w.end_of(10.0) is None  # [start, end)
    assert w.end_of(15.0) is None
    assert w.end_of(25.0) == 30.0
    assert w.end_of(-1.0) is None and w.end_of(31.0) is None


def test_windows_merge_overlaps_and_refuse_bad_input() -> None:
    assert Windows.merged([(5, 8), (0, 2), (1, 3), (8, 9)]).intervals == ((0, 3), (5, 9))
    with pytest.raises(ValueError):
        Windows(((0.0, 5.0), (4.0, 6.0)))
    with pytest.raises(ValueError):
        Windows(((3.0, 3.0),))


def test_fleet_is_deterministic_given_the_seed() -> None:
    a = make_fleet(200, FleetConfig(), 86_400.0, seed=7)
    b = make_fleet(200, FleetConfig(), 86_400.0, seed=7)
    c = make_fleet(200, FleetConfig(), 86_400.0, seed=8)
    assert a == b
    assert a != c


def test_stragglers_are_the_asked_fraction_and_about_ten_times_slower() -> None:
    fleet = make_fleet(2000, FleetConfig(straggler_fraction=0.15), 3600.0, seed=1)
    slow = np.array([p.s_per_sample for p in fleet if p.straggler])
    fast = np.array([p.s_per_sample for p in fleet if not p.straggler])
    assert len(slow) == 300
    assert 7.0 < np.median(slow) / np.median(fast) < 14.0
    # heavy tail among the normal devices too: p99 well above the median
    assert np.percentile(fast, 99) > 3.0 * np.median(fast)


def test_daily_pattern_most_devices_eligible_at_night_few_by_day() -> None:
    cfg = FleetConfig(start_hour=0.0)  # t = 0 is local midnight
    fleet = make_fleet(1000, cfg, 2 * 86_400.0, seed=3)

    def share(hour: float) -> float:
        return float(np.mean([p.windows.end_of(hour * HOUR_S) is not None for p in fleet]))

    assert share(26.0) > 0.85  # 02:00 on day 2
    assert share(14.0) < 0.25  # 14:00


def test_always_available_fleet_has_one_window() -> None:
    fleet = make_fleet(5, FleetConfig(availability=Availability.ALWAYS), 100.0, seed=0)
    assert all(p.windows.intervals == ((0.0, 100.0),) for p in fleet)


def test_trace_overrides_availability_and_must_match_the_fleet() -> None:
    trace = [Windows(((1.0, 2.0),)), Windows(((3.0, 4.0),))]
    fleet = make_fleet(2, FleetConfig(), 10.0, seed=0, trace=trace)
    assert [p.windows for p in fleet] == trace
    with pytest.raises(ValueError, match="trace has 2 devices"):
        make_fleet(3, FleetConfig(), 10.0, seed=0, trace=trace)
