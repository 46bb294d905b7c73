"""The compiled robust-aggregation kernels (server/kernels/robust.py) against numpy.

The sorting network is proved by the 0-1 principle (a comparator network sorts every input iff it
sorts every 0/1 input); the kernels then give numpy's order statistics bit for bit, and the
kernel-sized path of `aggregate` agrees with the numpy-sized one on the same rows."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from server.admission import Admission, AdmissionLimits
from server.core import ServerCore
from server.kernels import robust as kernels
from server.robust import Aggregator, RobustConfig, aggregate
from server.robust import aggregators as agg
from server.robust.rows import RowBuffer
from server.serving import ServingAverage
from server.staleness import make_staleness
from server.strategies import AdmittedUpdate, FedBuff, make_strategy
from tests.unit.server.defended_buffer import DefendedBuffer
from tests.unit.server.factory import make_manifest, update_bytes


def _apply_network(cols: np.ndarray, net: np.ndarray) -> np.ndarray:
    out = cols.copy()  # (k, m)
    for p, q in net:
        lo, hi = np.minimum(out[p], out[q]), np.maximum(out[p], out[q])
        out[p], out[q] = lo, hi
    return out


@pytest.mark.parametrize("k", range(1, 15))
def test_the_network_sorts_every_zero_one_input(k: int) -> None:
    cols = np.array(list(itertools.product((0, 1), repeat=k)), np.int8).T  # (k, 2**k)
    done = _apply_network(cols, kernels.sorting_network(k))
    assert (np.diff(done, axis=0) >= 0).all()
    assert all(p < q for p, q in kernels.sorting_network(k))


def test_the_network_sorts_larger_k_on_random_columns() -> None:
    rng = np.random.default_rng(3)
    for k in (17, 25, 32, 50):
        cols = rng.integers(-5, 5, (k, 4000))
        np.testing.assert_array_equal(
            _apply_network(cols, kernels.sorting_network(k)), np.sort(cols, axis=0)
        )


def test_the_network_refuses_no_rows() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        kernels.sorting_network(0)


def _rows(k: int, n: int, seed: int, ties: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if ties:  # many equal values per column (no zeros: a signed-zero tie may flip its sign)
        return rng.integers(1, 4, (k, n)).astype(np.float32) * np.float32(0.25)
    return (rng.standard_normal((k, n)) + 1e-3).astype(np.float32)


@pytest.mark.parametrize("k", [3, 4, 9, 10, 11, 20])
@pytest.mark.parametrize("ties", [False, True])
def test_column_order_statistics_match_numpy_bit_for_bit(k: int, ties: bool) -> None:
    rows = _rows(k, 1_001, seed=k, ties=ties)  # not a multiple of the tile width
    ordered = np.sort(rows, axis=0)
    median = ordered[k // 2] if k % 2 else (ordered[k // 2 - 1] + ordered[k // 2]) * np.float32(0.5)
    net = kernels.sorting_network(k)
    np.testing.assert_array_equal(kernels.column_median(rows, net), median)
    for b in range(0, (k - 1) // 2 + 1):
        trimmed = ordered[b : k - b].mean(axis=0, dtype=np.float32)
        np.testing.assert_array_equal(kernels.column_trimmed_mean(rows, net, b), trimmed)


def test_row_stats_are_float64_norms_and_dots() -> None:
    rows, ref = _rows(6, 5_000, seed=1), _rows(1, 5_000, seed=2)[0]
    sq, dot = np.empty(6), np.empty(6)
    kernels.row_stats(rows, ref, sq, dot)
    r = rows.astype(np.float64)
    np.testing.assert_allclose(sq, (r * r).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(dot, r @ ref.astype(np.float64), rtol=1e-12)


@pytest.mark.parametrize(
    ("kind", "trim"),
    [(Aggregator.MEDIAN, 0.0), (Aggregator.TRIMMED_MEAN, 0.2), (Aggregator.COSINE, 0.0)],
)
def test_the_kernel_path_of_aggregate_matches_the_numpy_path(
    kind: Aggregator, trim: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _rows(10, 40_000, seed=7)
    rows[9] *= -4  # one hostile row: cosine must weigh it out on both paths
    kernel = aggregate(rows, kind, trim)  # 40,000 columns: the kernels
    monkeypatch.setattr(agg, "_KERNEL_MIN_COLUMNS", 10**9)
    numpy_path = aggregate(rows, kind, trim)
    if kind is Aggregator.COSINE:  # the weights' float64 sums may differ in the last bits
        np.testing.assert_allclose(kernel, numpy_path, rtol=1e-6, atol=1e-9)
    else:
        np.testing.assert_array_equal(kernel, numpy_path)


def test_defence_rows_reuse_one_matrix_across_buffers_and_round_trip() -> None:
    d = DefendedBuffer(RobustConfig())
    data = _rows(7, 50, seed=4)
    for i, row in enumerate(data):  # past the first capacity of 4: the matrix grows
        d.accept(f"d{i}", float(np.linalg.norm(row)))
        d.add_row(row)
    np.testing.assert_array_equal(d.rows, data)
    state = d.state_dict()
    again = DefendedBuffer(RobustConfig())
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.rows, data)
    first, matrix = d.reduce(), d.rows.base
    d.end_buffer()
    assert d.rows.shape == (0, 50)
    for i, row in enumerate(data):
        d.accept(f"d{i}", 1.0)
        np.copyto(d.new_row(50), row)
    assert d.rows.base is matrix  # the same memory: no allocation for the second buffer
    np.testing.assert_array_equal(d.reduce(), first)


def test_a_row_of_another_length_mid_buffer_is_refused() -> None:
    d = DefendedBuffer(RobustConfig())
    d.add_row(np.ones(5, np.float32))
    with pytest.raises(ValueError, match="a row of 6 values in a buffer of 5"):
        d.new_row(6)


def test_fedbuff_default_defence_on_a_large_model_matches_a_numpy_reference() -> None:
    """FedBuff with the default defence plus sign agreement (cosine to the coordinate-wise
    median, then each coordinate scaled by the kept rows' sign agreement) on a model big enough
    for the kernels, against the same aggregate written out in numpy and float64."""
    n, k = 40_000, 10
    common = _rows(1, n, seed=12)  # (1, n): the direction honest devices share
    deltas = (common + _rows(k, n, seed=11)) * np.float32(1e-2)  # (k, n) float32
    deltas[3] = -deltas[3]  # a sign-flipped device
    strat = FedBuff(
        buffer_size=k,
        staleness=make_staleness("polynomial", {"a": 0.5}),
        robust=RobustConfig(norm_multiplier=None, sign_agreement=True),
    )
    model, version = np.zeros(n, np.float32), 0
    for i, delta in enumerate(deltas):
        r = strat.apply(model, version, AdmittedUpdate(f"d{i}", 1, 0, 1, delta))
        model, version = r.model, r.version
    assert version == 1
    rows = deltas.astype(np.float64)  # tau = 0: weight 1
    med = np.median(rows, axis=0)
    norms = np.linalg.norm(rows, axis=1)
    agree = rows @ med > 0
    clip = np.minimum(1.0, agg.COSINE_ROW_CLIP * np.median(norms) / norms)
    balance = np.abs(np.sign(rows[agree]).sum(axis=0)) / agree.sum()  # (n,) float64
    scale = np.clip((balance - 0.4) / (1.0 - 0.4), 0.0, 1.0)  # agreement.FLOOR, FULL
    expected = (agree * clip / agree.sum()) @ rows * scale
    assert not agree[3] and agree.sum() == k - 1
    assert 0.05 < np.mean(scale == 0) < 0.95  # the rule stops some coordinates, not all
    np.testing.assert_allclose(model, expected, rtol=1e-4, atol=1e-8)


def test_replay_rebuilds_the_default_defence_bit_for_bit(tmp_path: Path) -> None:
    """The default strategy and defence on a kernel-sized model, int8 and top-k updates: a
    server that restarts from its log (no checkpoint since the start) has the same model,
    serving average and open buffer, bit for bit, as the one that applied them live."""
    manifest = make_manifest(40_000)
    n = manifest.num_params

    def core() -> ServerCore:
        c = ServerCore(
            manifest,
            np.zeros(n, np.float32),
            make_strategy("fedbuff", {"buffer_size": 4}, None, {}),
            tmp_path,
            AdmissionLimits(max_staleness=None),
            serving=ServingAverage(0.9),
        )
        c.recover()
        return c

    live = core()
    int8 = {"name": "int8", "chunk": 256}
    codecs = (int8, {"name": "topk", "fraction": 0.05, "values": int8})
    common = _rows(1, n, seed=20)[0]
    for i in range(11):  # two flushes and three rows in the open buffer
        delta = (common + _rows(1, n, seed=30 + i)[0]) * np.float32(1e-3)
        payload = update_bytes(manifest, delta, device=f"d{i % 5}", seq=i + 1, codec=codecs[i % 2])
        assert live.submit(f"d{i % 5}", payload).ack.accepted
    live.commit()
    assert live.version == 2 and live.strategy.pending == 3
    assert np.abs(live.model).max() > 1e-4  # the defence let the honest updates through
    live.close()
    again = core()
    np.testing.assert_array_equal(again.model, live.model)
    np.testing.assert_array_equal(again.serving_model, live.serving_model)
    state, state_live = again.strategy.state_dict(), live.strategy.state_dict()
    assert state.keys() == state_live.keys()
    for key, value in state_live.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)
    again.close()


def _sparse_rows(k: int, n: int, keep: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    common = rng.choice(n, keep // 2, replace=False)  # half of each support shared
    out = []
    for _ in range(k):
        own = rng.choice(n, keep, replace=False)
        index = np.unique(np.concatenate([common, own]))[:keep].astype(np.int64)  # sorted
        out.append((index, (rng.standard_normal(index.size) + 0.5).astype(np.float32)))
    return out


def _defence_with(
    rows: list[tuple[np.ndarray, np.ndarray]], n: int, sparse: bool
) -> DefendedBuffer:
    d = DefendedBuffer(RobustConfig(norm_multiplier=None))
    for i, (index, values) in enumerate(rows):
        d.accept(f"d{i}", 1.0)
        if sparse:
            d.add_sparse_row(n, index, values)
        else:
            row = np.zeros(n, np.float32)
            row[index] = values
            d.add_row(row)
    return d


@pytest.mark.parametrize("n", [5_000, 200_000])
@pytest.mark.parametrize("kind", [Aggregator.MEDIAN, Aggregator.TRIMMED_MEAN, Aggregator.COSINE])
def test_sparse_rows_aggregate_on_their_support_as_the_dense_rows_do(
    n: int, kind: Aggregator
) -> None:
    rows = _sparse_rows(10, n, n // 100, seed=n)
    config = RobustConfig(aggregator=kind, norm_multiplier=None)
    sparse, dense = _defence_with(rows, n, True), _defence_with(rows, n, False)
    sparse.config = dense.config = config
    support, compact = sparse.row_buffer.compact()
    assert support is not None and compact.shape == (10, support.size) < (10, n // 4)
    g_sparse, g_dense = sparse.reduce(), dense.reduce()
    if kind is Aggregator.COSINE:  # float32 weighted sums, summed in another order: 1e-6 of max
        np.testing.assert_allclose(g_sparse, g_dense, rtol=0, atol=1e-6 * np.abs(g_dense).max())
    else:
        np.testing.assert_array_equal(g_sparse, g_dense)
    assert [s.device_id for s in sparse.scores] == [s.device_id for s in dense.scores]
    np.testing.assert_allclose(
        [s.cosine for s in sparse.scores], [s.cosine for s in dense.scores], rtol=1e-6
    )


def test_a_dense_row_or_a_wide_support_expands_the_sparse_rows() -> None:
    n = 4_000
    rows = _sparse_rows(6, n, 300, seed=1)  # union of 6 x 300 > n / 4: not worth compacting
    d = _defence_with(rows, n, True)
    assert d.row_buffer.compact()[0] is None
    np.testing.assert_array_equal(d.reduce(), _defence_with(rows, n, False).reduce())
    mixed = _defence_with(rows[:3], n, True)
    dense_row = np.full(n, 0.1, np.float32)
    mixed.accept("dense", 1.0)
    mixed.add_row(dense_row)  # one dense row: every row is expanded
    expanded = mixed.rows
    assert expanded.shape == (4, n)
    np.testing.assert_array_equal(expanded[3], dense_row)
    for row, (index, values) in zip(expanded, rows[:3], strict=False):
        np.testing.assert_array_equal(row[index], values)
        assert np.count_nonzero(row) == index.size


def test_sparse_rows_round_trip_through_the_state_as_dense_rows() -> None:
    n = 3_000
    rows = _sparse_rows(5, n, 30, seed=2)
    d = _defence_with(rows[:3], n, True)
    d.accept("dense", 1.0)
    d.add_row(np.full(n, 0.5, np.float32))  # a dense row among the sparse ones
    for i, (index, values) in enumerate(rows[3:]):
        d.accept(f"late{i}", 1.0)
        d.add_sparse_row(n, index, values)
    state = d.state_dict()
    assert len(d.row_buffer._sparse) == 5  # taking the state expanded nothing
    again = DefendedBuffer(RobustConfig(norm_multiplier=None))
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.rows[3], np.full(n, 0.5, np.float32))
    np.testing.assert_array_equal(again.rows, d.rows)
    np.testing.assert_array_equal(again.reduce(), d.reduce())


def test_fedbuff_keeps_top_k_rows_sparse_and_builds_the_same_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Top-k + int8 updates through the default defence: no (n,) row is ever written, and the
    model is the one the same deltas make as dense rows."""
    manifest = make_manifest(100_000)
    n = manifest.num_params
    codec = {"name": "topk", "fraction": 0.01, "values": {"name": "int8", "chunk": 256}}
    common = _rows(1, n, seed=40)[0]
    payloads = [
        update_bytes(
            manifest, (common + _rows(1, n, seed=41 + i)[0]) * np.float32(1e-3),
            device=f"d{i}", seq=1, codec=codec,
        )
        for i in range(10)
    ]  # fmt: skip
    admission = Admission(manifest, AdmissionLimits(max_staleness=None))

    def run(fused: bool) -> np.ndarray:
        strat = make_strategy("fedbuff", {"buffer_size": 10}, None, {})
        model, version = np.zeros(n, np.float32), 0
        for i, payload in enumerate(payloads):
            a = admission.admit(f"d{i}", payload, version=0, sequences={}, strategy=strat)
            update = a.fused if fused else a.fused.admitted()
            r = strat.apply_contribution(model, version, update)
            model, version = r.model, r.version
        assert version == 1
        return model

    dense = run(fused=False)
    monkeypatch.setattr(RowBuffer, "new_row", lambda *_: pytest.fail("a dense row was written"))
    sparse = run(fused=True)
    assert np.abs(dense).max() > 0
    np.testing.assert_allclose(sparse, dense, rtol=1e-6, atol=1e-12)


def test_weighted_row_sum_is_the_same_bits_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    rows, coef = _rows(7, 40_000, seed=50), _rows(1, 7, seed=51)[0]
    kernel = agg.weighted_row_sum(rows, coef)
    monkeypatch.setattr(agg, "_KERNEL_MIN_COLUMNS", 10**9)
    numpy_path = agg.weighted_row_sum(rows, coef)
    np.testing.assert_array_equal(kernel, numpy_path)
    expected = sum(
        c.astype(np.float64) * r.astype(np.float64) for c, r in zip(coef, rows, strict=True)
    )
    np.testing.assert_allclose(kernel, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [3, 10])
def test_median_stats_in_one_pass_equal_the_median_then_row_stats(k: int) -> None:
    rows = _rows(k, 3_001, seed=60 + k)
    net = kernels.sorting_network(k)
    sq, dot = np.empty(k), np.empty(k)
    median, med_sq = kernels.column_median_stats(rows, net, sq, dot)
    np.testing.assert_array_equal(median, kernels.column_median(rows, net))
    sq2, dot2 = np.empty(k), np.empty(k)
    kernels.row_stats(rows, median, sq2, dot2)
    np.testing.assert_allclose(sq, sq2, rtol=1e-12)
    np.testing.assert_allclose(dot, dot2, rtol=1e-12)
    m = median.astype(np.float64)
    assert med_sq == pytest.approx(float(m @ m), rel=1e-12)
