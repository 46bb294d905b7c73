"""The compiled robust-aggregation kernels (server/robust/kernels.py) against numpy.

The sorting network is proved by the 0-1 principle (a comparator network sorts every input iff it
sorts every 0/1 input); the kernels then give numpy's order statistics bit for bit, and the
kernel-sized path of `aggregate` agrees with the numpy-sized one on the same rows."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from server.admission import AdmissionLimits
from server.core import ServerCore
from server.robust import Aggregator, RobustConfig, aggregate, kernels
from server.robust import aggregators as agg
from server.robust.defence import Defence
from server.serving import ServingAverage
from server.staleness import make_staleness
from server.strategies import AdmittedUpdate, FedBuff, make_strategy
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
    d = Defence(RobustConfig(), keeps_rows=True)
    data = _rows(7, 50, seed=4)
    for i, row in enumerate(data):  # past the first capacity of 4: the matrix grows
        d.accept(f"d{i}", float(np.linalg.norm(row)))
        d.add_row(row)
    np.testing.assert_array_equal(d.rows, data)
    state = d.state_dict()
    again = Defence(RobustConfig(), keeps_rows=True)
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.rows, data)
    first = d.reduce()
    d.end_buffer()
    assert d.rows.shape == (0, 50)
    matrix = d.rows.base
    for i, row in enumerate(data):
        d.accept(f"d{i}", 1.0)
        np.copyto(d.new_row(50), row)
    assert d.rows.base is matrix  # the same memory: no allocation for the second buffer
    np.testing.assert_array_equal(d.reduce(), first)


def test_a_row_of_another_length_mid_buffer_is_refused() -> None:
    d = Defence(RobustConfig(), keeps_rows=True)
    d.add_row(np.ones(5, np.float32))
    with pytest.raises(ValueError, match="a row of 6 values in a buffer of 5"):
        d.new_row(6)


def test_fedbuff_default_defence_on_a_large_model_matches_a_numpy_reference() -> None:
    """FedBuff with the default defence (cosine to the coordinate-wise median) on a model big
    enough for the kernels, against the same aggregate written out in numpy and float64."""
    n, k = 40_000, 10
    common = _rows(1, n, seed=12)  # (1, n): the direction honest devices share
    deltas = (common + _rows(k, n, seed=11)) * np.float32(1e-2)  # (k, n) float32
    deltas[3] = -deltas[3]  # a sign-flipped device
    strat = FedBuff(
        buffer_size=k,
        staleness=make_staleness("polynomial", {"a": 0.5}),
        robust=RobustConfig(norm_multiplier=None),
    )
    model, version = np.zeros(n, np.float32), 0
    for i, delta in enumerate(deltas):
        r = strat.apply(model, version, AdmittedUpdate(f"d{i}", 1, 0, 1, delta))
        model, version = r.model, r.version
    assert version == 1
    rows = deltas.astype(np.float64)  # tau = 0: weight 1
    med = np.median(rows, axis=0)
    norms = np.linalg.norm(rows, axis=1)
    trust = np.maximum(rows @ med / (norms * np.linalg.norm(med)), 0)
    expected = (trust * np.linalg.norm(med) / norms / trust.sum()) @ rows
    assert trust[3] == 0.0
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
