from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.sim.events import EventKind, EventQueue


def test_pops_in_time_order_and_advances_the_clock() -> None:
    q = EventQueue()
    q.push(5.0, EventKind.EVAL)
    q.push(1.0, EventKind.ARRIVE, device=3)
    q.push(3.0, EventKind.DROP, device=1)
    got = [(q.pop().time, q.now) for _ in range(3)]
    assert got == [(1.0, 1.0), (3.0, 3.0), (5.0, 5.0)]
    assert len(q) == 0 and q.peek_time() == math.inf


def test_ties_pop_in_push_order() -> None:
    q = EventQueue()
    for d in range(5):
        q.push(2.0, EventKind.ARRIVE, device=d)
    assert [q.pop().device for _ in range(5)] == [0, 1, 2, 3, 4]


def test_time_never_goes_back_and_must_be_finite() -> None:
    q = EventQueue()
    q.push(10.0, EventKind.EVAL)
    q.pop()
    with pytest.raises(ValueError, match="before now"):
        q.push(9.0, EventKind.EVAL)
    with pytest.raises(ValueError, match="finite"):
        q.push(math.nan, EventKind.EVAL)
    q.push(10.0, EventKind.EVAL)  # "now" itself is fine


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50))
def test_any_push_order_pops_sorted_and_stable(times: list[float]) -> None:
    q = EventQueue()
    for i, t in enumerate(times):
        q.push(t, EventKind.EVAL, device=i)
    popped = [q.pop() for _ in times]
    assert [(e.time, e.device) for e in popped] == sorted((t, i) for i, t in enumerate(times))
