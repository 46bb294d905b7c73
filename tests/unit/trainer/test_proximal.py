"""The FedProx proximal step shared by every trainer backend, by hand and as a property."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from agent.trainer.base import proximal_step


def test_proximal_step_by_hand() -> None:
    w = np.array([2.0, -4.0, 1.0], dtype=np.float32)
    w0 = np.array([0.0, 0.0, 1.0], dtype=np.float32)
    out = proximal_step(w, w0, learning_rate=0.1, mu=10.0)  # shrink 1 / (1 + 1) = 0.5
    np.testing.assert_array_equal(out, np.array([1.0, -2.0, 1.0], dtype=np.float32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(w, [2.0, -4.0, 1.0])  # inputs untouched


@given(
    st.lists(st.floats(-1e3, 1e3, width=32), min_size=1, max_size=8),
    st.floats(1e-4, 1.0),
    st.floats(0.0, 1e3),
)
def test_proximal_step_never_overshoots_the_anchor(
    values: list[float], lr: float, mu: float
) -> None:
    w = np.asarray(values, dtype=np.float32)
    w0 = np.zeros_like(w)
    out = proximal_step(w, w0, lr, mu)
    assert np.all(np.abs(out) <= np.abs(w))  # pulled towards w0, never past it
    assert np.all(np.sign(out) * np.sign(w) >= 0)
