"""Sign agreement (server/robust/agreement.py): hand-checked votes, the kernel's bits, the cases
where it must stay out of the way, and the config that switches it."""

from __future__ import annotations

import numpy as np
import pytest

from server.robust import Aggregator, RobustConfig, aggregate
from server.robust import agreement as agr


def _votes(pos: int, neg: int, zero: int = 0) -> np.ndarray:
    """One column of signs as a (pos + neg + zero, 1) float32 row block."""
    col = [1.0] * pos + [-1.0] * neg + [0.0] * zero
    return np.array(col, np.float32)[:, None]


@pytest.mark.parametrize(
    ("pos", "neg", "zero", "scale"),
    [
        (10, 0, 0, 1.0),  # all agree: a = 1.0 = FULL
        (9, 1, 0, 2 / 3),  # a = 0.8: two thirds of the way from FLOOR 0.4 to FULL 1.0
        (8, 2, 0, 1 / 3),  # a = 0.6
        (7, 3, 0, 0.0),  # a = 0.4 = FLOOR
        (5, 5, 0, 0.0),
        (1, 0, 9, 0.0),  # one device moves it, nine leave it: it does not move
    ],
)
def test_a_column_moves_as_far_as_its_rows_agree(
    pos: int, neg: int, zero: int, scale: float
) -> None:
    assert (agr.FLOOR, agr.FULL) == (0.4, 1.0)  # the values the cases are computed for
    column = _votes(pos, neg, zero)  # (10, 1)
    # pad with dense columns so the rows count as dense
    rows = np.hstack([column, np.ones((10, 9), np.float32)])  # (10, 10)
    g = np.full(10, 2.0, np.float32)
    assert agr.scale_by_agreement(g, rows, np.ones(10, bool))
    assert g[0] == pytest.approx(2.0 * scale)
    assert np.all(g[1:] == 2.0)


def test_only_the_voting_rows_count() -> None:
    rows = np.hstack([_votes(8, 2), np.ones((10, 3), np.float32)])  # (10, 4)
    voters = np.ones(10, bool)
    voters[8:] = False  # the two dissenting rows were not kept: 8 of 8 agree
    g = np.ones(4, np.float32)
    assert agr.scale_by_agreement(g, rows, voters)
    assert g.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_sparse_rows_and_tiny_buffers_are_left_alone() -> None:
    rng = np.random.default_rng(0)
    sparse = np.zeros((10, 100), np.float32)
    for i in range(10):  # top-k style: 5 of 100 values each, little overlap
        sparse[i, rng.choice(100, 5, replace=False)] = rng.standard_normal(5)
    g = np.ones(100, np.float32)
    assert not agr.scale_by_agreement(g, sparse, np.ones(10, bool))
    assert np.all(g == 1.0)
    dense = rng.standard_normal((2, 100)).astype(np.float32)
    assert not agr.scale_by_agreement(g, dense, np.ones(2, bool))  # two rows: nothing to vote
    assert np.all(g == 1.0)


def test_the_kernel_gives_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    common = rng.standard_normal(5000).astype(np.float32)  # a direction most rows share
    rows = (common + 1.5 * rng.standard_normal((9, 5000))).astype(np.float32)  # (9, n)
    rows[:, :100] = 0.0  # columns nobody moves
    voters = np.array([True] * 8 + [False])
    g0 = rng.standard_normal(5000).astype(np.float32)
    numpy_g, kernel_g = g0.copy(), g0.copy()
    assert agr.scale_by_agreement(numpy_g, rows, voters)
    monkeypatch.setattr(agr, "_KERNEL_MIN_COLUMNS", 1)
    assert agr.scale_by_agreement(kernel_g, rows, voters)
    np.testing.assert_array_equal(kernel_g, numpy_g)
    assert np.all(kernel_g[:100] == 0.0)
    assert 0.05 < np.mean(kernel_g == 0.0) < 0.95 and np.any((kernel_g != 0) & (kernel_g != g0))


def test_aggregate_scales_the_cosine_aggregate_by_its_kept_rows() -> None:
    honest = np.tile(np.array([[2.0, 1.0, 0.0]], np.float32), (8, 1))  # (8, 3)
    honest[:4, 1] = -1.0  # column 1: 4 against 4
    hostile = np.array([[-5.0, -5.0, 3.0], [-5.0, -5.0, 3.0]], np.float32)  # sign-flipped
    rows = np.vstack([honest, hostile])  # (10, 3); median [2, -1, 0]
    # the hostile rows point away from the median: not kept, and they do not vote
    assert aggregate(rows, Aggregator.COSINE).tolist() == pytest.approx([2.0, 0.0, 0.0])
    assert aggregate(rows, Aggregator.COSINE, sign_agreement=True).tolist() == [2.0, 0.0, 0.0]
    honest[0, 2] = 4.0  # one honest device alone moves column 2
    rows = np.vstack([honest, hostile])
    cut = np.sqrt(5.0 / 21.0)  # its row [2, -1, 4] is cut to the median row length sqrt(5)
    assert aggregate(rows, Aggregator.COSINE)[2] == pytest.approx(4.0 * cut / 8)
    assert aggregate(rows, Aggregator.COSINE, sign_agreement=True)[2] == 0.0


def test_config_switches_it_and_round_trips() -> None:
    assert not RobustConfig().sign_agreement and "sign" not in RobustConfig().label
    on = RobustConfig.from_mapping({"sign_agreement": True})
    assert on is not None and on.sign_agreement and on.votes_on_signs and "sign" in on.label
    assert RobustConfig.from_mapping(on.to_mapping()) == on
    # a plain mean keeps a running sum and no rows: nothing to vote on, and the label says so
    mean = RobustConfig(aggregator=Aggregator.MEAN, sign_agreement=True)
    assert mean.sign_agreement and not mean.votes_on_signs and "sign" not in mean.label
    with pytest.raises(ValueError, match="sign_agreement"):
        RobustConfig.from_mapping({"sign_agreement": "yes"})
