import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from agent.trainer import TrainConfig, macro_f1, plan_batches
from protocol.errors import ConfigError


def test_epochs_cover_every_sample_once_per_pass() -> None:
    batches = list(plan_batches(10, 4, epochs=2, steps=None, seed=0))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate(batches[:3]).tolist()) == list(range(10))
    assert sorted(np.concatenate(batches[3:]).tolist()) == list(range(10))


def test_steps_win_over_epochs_and_cycle_the_data() -> None:
    batches = list(plan_batches(10, 4, epochs=1, steps=7, seed=0))
    assert len(batches) == 7


def test_same_seed_same_batches_other_seed_other_order() -> None:
    a = [b.tolist() for b in plan_batches(50, 8, 1, None, seed=3)]
    b = [b.tolist() for b in plan_batches(50, 8, 1, None, seed=3)]
    c = [b.tolist() for b in plan_batches(50, 8, 1, None, seed=4)]
    assert a == b
    assert a != c


def test_macro_f1_by_hand() -> None:
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 1, 1])
    # class 0: tp 1 fp 0 fn 1 -> 2/3; class 1: tp 2 fp 1 fn 0 -> 4/5
    assert macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 4 / 5) / 2)


@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=60),
)
def test_macro_f1_matches_scikit_learn(pairs: list[tuple[int, int]]) -> None:
    y_true = np.array([p[0] for p in pairs])
    y_pred = np.array([p[1] for p in pairs])
    assert macro_f1(y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, average="macro", zero_division=0.0)
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": None, "steps": None},
        {"steps": -1},
        {"batch_size": 0},
        {"prox_mu": -0.1},
        {"prox_mu": float("nan")},
    ],
)
def test_bad_train_config_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        TrainConfig(**kwargs)  # type: ignore[arg-type]
