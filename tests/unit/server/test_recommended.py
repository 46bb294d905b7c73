"""The recommended defaults (server/recommended.py): values, and what the table builds, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from server.recommended import recommended_strategy
from server.serving import ServingAverage
from server.strategies import AdmittedUpdate, FedBuff, make_strategy


@pytest.mark.parametrize(
    ("concurrency", "k"), [(1, 2), (4, 2), (5, 2), (8, 4), (20, 10), (100, 10)]
)
def test_buffer_is_half_the_concurrent_devices_clamped_to_2_10(concurrency: int, k: int) -> None:
    assert recommended_strategy(concurrency).buffer_size == k


def test_zero_concurrency_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        recommended_strategy(0)


def _build(concurrency: int) -> FedBuff:
    table = dict(recommended_strategy(concurrency).strategy)
    name, staleness = table.pop("name"), table.pop("staleness")
    strategy = make_strategy(name, table, staleness)
    assert isinstance(strategy, FedBuff)
    return strategy


def test_a_flush_is_the_staleness_weighted_mean_times_the_server_lr() -> None:
    fedbuff = _build(4)  # K = 2, polynomial a = 0.5, sgd at server_lr 2
    model = np.array([1.0, -1.0], np.float32)
    # at version 3: a fresh update (tau 0, s = 1) and one from version 0 (tau 3, s = 4^-0.5 = 0.5)
    first = fedbuff.apply(model, 3, AdmittedUpdate("a", 1, 3, 32, np.array([1, 0], np.float32)))
    assert not first.stepped
    step = fedbuff.apply(model, 3, AdmittedUpdate("b", 1, 0, 32, np.array([0, 4], np.float32)))
    # g = (1 * [1, 0] + 0.5 * [0, 4]) / 2 = [0.5, 1];  x = [1, -1] + 2 * g = [2, 1]
    assert step.stepped and step.version == 4
    np.testing.assert_allclose(step.model, [2.0, 1.0], rtol=0, atol=1e-6)


def test_the_server_step_replays_from_its_state() -> None:
    a, b = _build(8), _build(8)  # K = 4
    model = np.zeros(3, np.float32)
    for i in range(3):  # mid-buffer: three of four updates pending
        a.apply(model, 0, AdmittedUpdate("d", i, 0, 8, np.full(3, i + 1, np.float32)))
    b.load_state_dict(a.state_dict())
    last = AdmittedUpdate("d", 9, 0, 8, np.full(3, 4, np.float32))
    ra, rb = a.apply(model, 0, last), b.apply(model, 0, last)
    # g = (1 + 2 + 3 + 4) / 4 = 2.5 per coordinate; x = 0 + 2 * 2.5 = 5
    np.testing.assert_array_equal(ra.model, rb.model)
    np.testing.assert_allclose(ra.model, [5.0, 5.0, 5.0], rtol=0, atol=1e-6)


def test_the_serving_average_has_the_recommended_horizon() -> None:
    decay = recommended_strategy(8).serving_decay
    serving = ServingAverage(decay)
    horizon = round(1 / (1 - decay))  # the first `horizon` versions: their exact mean
    for v in range(1, horizon + 1):
        serving.observe(np.array([float(v)], np.float32))
    np.testing.assert_allclose(serving.model(np.zeros(1)), [(horizon + 1) / 2], rtol=1e-5)
    serving.observe(np.array([0.0], np.float32))  # then an EMA: avg <- d * avg + (1 - d) * x
    np.testing.assert_allclose(serving.model(np.zeros(1)), [decay * (horizon + 1) / 2], rtol=1e-5)
