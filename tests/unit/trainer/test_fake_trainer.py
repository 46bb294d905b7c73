import numpy as np
import pytest

from agent.trainer import FakeTrainer, TrainConfig
from protocol.errors import DataError, ProtocolError
from protocol.manifest import Manifest, ParamSpec

MANIFEST = Manifest(
    "mlp", (ParamSpec("w", (3, 2)), ParamSpec("b", (2,))), "input", (3,), 2, learning_rate=0.1
)
X = np.zeros((10, 3), np.float32)
Y = np.array([0, 1, 1, 1, 0, 1, 0, 1, 1, 1], np.int64)


def test_each_step_adds_the_delta() -> None:
    t = FakeTrainer(MANIFEST, step_delta=0.5)
    r = t.train(X, Y, TrainConfig(epochs=1, batch_size=4))
    assert (r.steps, r.samples, r.stopped_early) == (3, 10, False)
    np.testing.assert_array_equal(r.weights, np.full(8, 1.5, np.float32))
    np.testing.assert_array_equal(t.get_weights(), r.weights)
    assert r.mean_loss == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)


def test_should_stop_is_checked_between_steps() -> None:
    t = FakeTrainer(MANIFEST, step_delta=1.0)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2  # allow two steps

    r = t.train(X, Y, TrainConfig(steps=100, batch_size=2), should_stop=stop)
    assert (r.steps, r.samples, r.stopped_early) == (2, 4, True)
    np.testing.assert_array_equal(r.weights, np.full(8, 2.0, np.float32))


def test_prox_step_by_hand() -> None:
    # lr 0.1, mu 5 -> shrink 1/1.5; delta 1: d1 = 1/1.5, d2 = (d1 + 1)/1.5
    t = FakeTrainer(MANIFEST, step_delta=1.0, initial_weights=np.full(8, 3.0, np.float32))
    r = t.train(X, Y, TrainConfig(steps=2, batch_size=5, prox_mu=5.0))
    d1 = 1 / 1.5
    np.testing.assert_allclose(r.weights, 3.0 + (d1 + 1) / 1.5, rtol=1e-6)


def test_evaluate_predicts_the_majority_label() -> None:
    t = FakeTrainer(MANIFEST)
    t.train(X, Y, TrainConfig())
    e = t.evaluate(X, Y)
    assert e.accuracy == pytest.approx(0.7)
    assert e.samples == 10
    # class 1: tp 7, fp 3, fn 0 -> 14/17; class 0: 0
    assert e.macro_f1 == pytest.approx((14 / 17) / 2)


def test_refuses_bad_inputs() -> None:
    t = FakeTrainer(MANIFEST)
    with pytest.raises(ProtocolError):
        t.set_weights(np.zeros(7, np.float32))
    with pytest.raises(ProtocolError):
        t.set_weights(np.full(8, np.nan, np.float32))
    with pytest.raises(DataError):
        t.train(X.astype(np.float64), Y, TrainConfig())
    with pytest.raises(DataError):
        t.train(X, Y + 1, TrainConfig())  # label 2 with 2 classes
