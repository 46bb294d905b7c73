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
