from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ConfigError
from server.staleness import StalenessFn, constant, hinge, make_staleness, polynomial


def test_constant_is_one() -> None:
    assert constant(0) == 1.0
    assert constant(7) == 1.0


def test_polynomial_hand_values() -> None:
    assert polynomial(0, a=0.5) == 1.0
    assert polynomial(3, a=0.5) == 0.5  # (1+3)^-0.5 = 1/2
    assert polynomial(1, a=1.0) == 0.5
    assert polynomial(9, a=2.0) == pytest.approx(0.01)


def test_hinge_hand_values() -> None:
    assert hinge(0, a=10, b=4) == 1.0
    assert hinge(4, a=10, b=4) == 1.0  # flat up to b
    assert hinge(5, a=10, b=4) == pytest.approx(1 / 11)
    assert hinge(6, a=0.5, b=4) == 0.5  # 1 / (0.5 * 2 + 1)


def test_negative_tau_refused() -> None:
    with pytest.raises(ValueError, match="tau"):
        polynomial(-1)


@given(st.integers(0, 10_000), st.floats(0, 4), st.floats(0, 20), st.floats(0, 50))
def test_weights_in_unit_interval_and_non_increasing(
    tau: int, a: float, ha: float, hb: float
) -> None:
    fns: list[StalenessFn] = [partial(polynomial, a=a), partial(hinge, a=ha, b=hb)]
    for fn in fns:
        w, w_next = fn(tau), fn(tau + 1)
        assert 0.0 <= w <= 1.0  # 0 only by float underflow at huge tau and a
        assert w_next <= w


def test_make_staleness_validates_with_key_names() -> None:
    assert make_staleness("polynomial", {"a": 1})(1) == 0.5
    with pytest.raises(ConfigError, match=r"staleness\.b"):
        make_staleness("polynomial", {"b": 1})
    with pytest.raises(ConfigError, match="unknown"):
        make_staleness("exponential")
    with pytest.raises(ConfigError, match=r"staleness\.a"):
        make_staleness("hinge", {"a": float("nan")})
