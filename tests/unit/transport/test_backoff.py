from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transport import Backoff


def test_ceiling_doubles_from_initial_and_stops_at_cap() -> None:
    backoff = Backoff(initial=0.5, cap=4.0, rng=random.Random(0))
    ceilings = []
    for _ in range(7):
        ceilings.append(backoff.ceiling())
        backoff.next_delay()
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


def test_reset_starts_over() -> None:
    backoff = Backoff(initial=1.0, cap=60.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.ceiling() == 1.0


def test_jitter_spreads_a_fleet_that_failed_together() -> None:
    """1000 devices at the same attempt must not retry in lock-step."""
    delays = []
    for seed in range(1000):
        backoff = Backoff(initial=1.0, cap=60.0, rng=random.Random(seed))
        for _ in range(3):
            backoff.next_delay()
        delays.append(backoff.next_delay())  # 4th attempt: uniform(0, 8)
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert len({round(d, 3) for d in delays}) > 900
    assert 3.5 < sum(delays) / len(delays) < 4.5  # mean of uniform(0, 8) is 4


@given(st.floats(0.001, 10.0), st.floats(0.0, 1000.0), st.integers(0, 10_000))
def test_delay_never_exceeds_cap(initial: float, extra: float, attempts: int) -> None:
    backoff = Backoff(initial=initial, cap=initial + extra, rng=random.Random(attempts))
    backoff.attempt = attempts  # long outages must not overflow
    assert 0.0 <= backoff.next_delay() <= initial + extra


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=0.0, cap=1.0)
    with pytest.raises(ValueError):
        Backoff(initial=2.0, cap=1.0)
