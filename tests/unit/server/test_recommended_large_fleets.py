"""Recommended defaults at fleet scale: FedBuff K relative to concurrency (server.recommended)."""

from __future__ import annotations

import pytest

from server.recommended import recommended_strategy
from server.strategies import FedBuff, make_strategy


@pytest.mark.parametrize(
    ("concurrency", "k"),
    [
        (1, 2),  # never a buffer of one: one skewed device would move the model alone
        (3, 2),
        (8, 4),  # small fleets: half the devices training at once
        (20, 10),
        (50, 10),  # 10 up to 100 concurrent ...
        (100, 10),
        (150, 15),  # ... then a tenth of them, so staleness stays about 10 steps
        (200, 20),
        (1000, 100),
    ],
)
def test_buffer_size_follows_concurrency(concurrency: int, k: int) -> None:
    rec = recommended_strategy(concurrency)
    assert rec.buffer_size == k
    table = dict(rec.strategy)
    name, staleness = table.pop("name"), table.pop("staleness")
    strategy = make_strategy(name, table, staleness)  # the table is a valid [strategy]
    assert isinstance(strategy, FedBuff) and strategy.buffer_size == k
    # parity.json's settings up to 100 concurrent devices, the fleet benchmark's above
    assert (rec.serving_decay, table["server_lr"]) == (
        (0.98, 2.0) if concurrency <= 100 else (0.95, 1.0)
    )


def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        recommended_strategy(0)


@pytest.mark.parametrize("concurrency", [101, 300, 1000])
def test_large_fleets_decay_the_server_lr_by_cosine_to_a_tenth(concurrency: int) -> None:
    table = dict(recommended_strategy(concurrency).strategy)
    name, staleness = table.pop("name"), table.pop("staleness")
    strategy = make_strategy(name, table, staleness)
    assert isinstance(strategy, FedBuff)
    schedule = strategy.server_optimizer.schedule
    # 0.1 + 0.9 * (1 + cos(pi * t / 300)) / 2: 1 at step 1 (to 1e-4), 0.55 at 150, 0.1 from 300 on
    assert schedule.factor(1) == pytest.approx(1.0, abs=1e-4)
    assert schedule.factor(150) == pytest.approx(0.55)
    assert schedule.factor(300) == pytest.approx(0.1)
    assert schedule.factor(5000) == pytest.approx(0.1)


@pytest.mark.parametrize("concurrency", [1, 8, 100])
def test_small_fleets_keep_a_constant_server_lr(concurrency: int) -> None:
    table = recommended_strategy(concurrency).strategy
    assert "lr_schedule" not in table
