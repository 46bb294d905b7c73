"""Real ONNX Runtime training from exported artifacts: learning, round trips, stop, FedProx."""

import numpy as np
import pytest

from agent.trainer import TrainConfig, load_trainer
from protocol.errors import ConfigError, DataError, ProtocolError
from tests.support.artifacts import digits_arrays, exported_artifacts, sensor_arrays

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("model", "shape"), [("mlp", (64,)), ("cnn2d", (1, 8, 8))])
def test_digits_reach_95_percent(model: str, shape: tuple[int, ...]) -> None:
    x_train, y_train, x_test, y_test = digits_arrays(shape)
    trainer = load_trainer(exported_artifacts(model, shape, 10))
    assert trainer.name == "onnxruntime"
    before = trainer.evaluate(x_test, y_test)
    result = trainer.train(x_train, y_train, TrainConfig(epochs=15, batch_size=32))
    after = trainer.evaluate(x_test, y_test)
    print(
        f"{model} digits: accuracy {before.accuracy:.3f} -> {after.accuracy:.3f}, "
        f"macro-F1 {after.macro_f1:.3f}, {result.steps} steps in {result.seconds:.2f}s"
    )
    assert result.steps == 15 * 45 and result.samples == 15 * 1437
    assert before.accuracy < 0.3
    assert after.accuracy >= 0.95
    assert after.macro_f1 >= 0.94
    assert after.loss < before.loss
    np.testing.assert_array_equal(result.weights, trainer.get_weights())


def test_cnn1d_learns_a_generated_sensor_task() -> None:
    x, y = sensor_arrays(n=800, channels=3, length=32, classes=4, seed=0)
    x_test, y_test = sensor_arrays(n=200, channels=3, length=32, classes=4, seed=1)
    trainer = load_trainer(exported_artifacts("cnn1d", (3, 32), 4))
    before = trainer.evaluate(x_test, y_test)
    trainer.train(x, y, TrainConfig(epochs=10, batch_size=32))
    after = trainer.evaluate(x_test, y_test)
    print(f"cnn1d sensor: accuracy {before.accuracy:.3f} -> {after.accuracy:.3f}")
    assert before.accuracy < 0.5
    assert after.accuracy >= 0.9


def test_set_get_round_trip_is_exact_without_a_step() -> None:
    trainer = load_trainer(exported_artifacts("cnn2d", (1, 8, 8), 10))
    n = trainer.manifest.num_params
    vec = np.random.default_rng(5).normal(size=n).astype(np.float32)  # (n,)
    trainer.set_weights(vec)
    np.testing.assert_array_equal(trainer.get_weights(), vec)
    x, y, _, _ = digits_arrays((1, 8, 8))
    result = trainer.train(x[:64], y[:64], TrainConfig(steps=0))
    assert result.steps == 0
    np.testing.assert_array_equal(result.weights, vec)  # bit-exact through a zero-step train
    trainer.evaluate(x[:64], y[:64])
    np.testing.assert_array_equal(trainer.get_weights(), vec)  # evaluation does not move them


def test_training_is_repeatable_and_starts_with_fresh_optimizer_state() -> None:
    x, y, _, _ = digits_arrays()
    trainer = load_trainer(exported_artifacts())
    w0 = trainer.get_weights()
    first = trainer.train(x, y, TrainConfig(steps=30, seed=3))
    trainer.set_weights(w0)
    second = trainer.train(x, y, TrainConfig(steps=30, seed=3))
    np.testing.assert_array_equal(first.weights, second.weights)
    trainer.set_weights(w0)
    other = trainer.train(x, y, TrainConfig(steps=30, seed=4))
    assert not np.array_equal(first.weights, other.weights)


def test_should_stop_is_checked_between_steps() -> None:
    x, y, _, _ = digits_arrays()
    trainer = load_trainer(exported_artifacts())
    calls: list[int] = []

    def stop_after_five() -> bool:
        calls.append(1)
        return len(calls) > 5

    result = trainer.train(x, y, TrainConfig(epochs=3, batch_size=16), stop_after_five)
    assert (result.steps, result.samples, result.stopped_early) == (5, 80, True)
    assert len(calls) == 6


def test_fedprox_mu_zero_is_plain_training_and_mu_pulls_towards_the_base() -> None:
    x, y, _, _ = digits_arrays()
    skewed = np.isin(y, [0, 1])  # non-IID: this device has only two of the ten digits
    xs, ys = x[skewed], y[skewed]
    folder = exported_artifacts()
    config = TrainConfig(steps=60, batch_size=16, seed=1)

    def run(mu: float | None) -> np.ndarray:
        trainer = load_trainer(folder)
        cfg = config if mu is None else TrainConfig(steps=60, batch_size=16, seed=1, prox_mu=mu)
        return trainer.train(xs, ys, cfg).weights

    base = load_trainer(folder).get_weights()
    plain, zero, small, strong = run(None), run(0.0), run(1.0), run(20.0)
    np.testing.assert_array_equal(plain, zero)  # mu = 0 is bit-identical to plain training
    assert not np.array_equal(plain, small)  # ... and any mu > 0 changes the result
    drift = [float(np.linalg.norm(w - base)) for w in (plain, small, strong)]
    print(
        f"FedProx drift from base: mu=0 {drift[0]:.4f}, mu=1 {drift[1]:.4f}, mu=20 {drift[2]:.4f}"
    )
    assert drift[0] > drift[1] > drift[2] > 0


def test_bad_inputs_are_refused() -> None:
    trainer = load_trainer(exported_artifacts())
    x, y, _, _ = digits_arrays()
    with pytest.raises(ProtocolError):
        trainer.set_weights(np.zeros(trainer.manifest.num_params + 1, np.float32))
    with pytest.raises(ProtocolError):
        trainer.set_weights(np.zeros(trainer.manifest.num_params, np.float64))
    with pytest.raises(DataError):
        trainer.train(x.reshape(-1, 1, 8, 8), y, TrainConfig())
    with pytest.raises(ConfigError):
        load_trainer(exported_artifacts(), backend="torch")


def test_divergence_raises_and_restores_the_weights() -> None:
    trainer = load_trainer(exported_artifacts())
    x, y, _, _ = digits_arrays()
    huge = np.full(trainer.manifest.num_params, 1e30, np.float32)  # logits overflow to inf
    trainer.set_weights(huge)
    with pytest.raises(DataError, match="diverged"):
        trainer.train(x, y, TrainConfig(steps=5))
    np.testing.assert_array_equal(trainer.get_weights(), huge)
