from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from server.evaluation import macro_f1


def test_macro_f1_hand_computed() -> None:
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fp0 fn1 -> 0
    assert macro_f1(y_true, y_pred, 3) == (0.5 + 0.8 + 0.0) / 3


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=60))
def test_macro_f1_matches_sklearn(pairs: list[tuple[int, int]]) -> None:
    y_true = np.array([a for a, _ in pairs])
    y_pred = np.array([b for _, b in pairs])
    expected = f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert abs(macro_f1(y_true, y_pred, 5) - expected) < 1e-12
