"""Hand-computed strategy results on tiny vectors, plus aggregation invariants (Hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ConfigError, Reason, RejectedUpdate
from server.staleness import make_staleness, polynomial
from server.strategies import (
    AdmittedUpdate,
    FedAsync,
    FedAvg,
    FedBuff,
    Strategy,
    make_strategy,
)


def upd(
    delta: list[float], base: int = 0, n: int = 1, dev: str = "d", seq: int = 1
) -> AdmittedUpdate:
    return AdmittedUpdate(dev, seq, base, n, np.array(delta, np.float32))


def f32(*xs: float) -> np.ndarray:
    return np.array(xs, np.float32)


# --- FedAsync -------------------------------------------------------------------------------


def test_fedasync_hand_computed() -> None:
    s = FedAsync(alpha=0.5, staleness=lambda t: polynomial(t, 1.0))
    # tau = 3 - 1 = 2 -> s = 1/3; weight = 0.5/3; x = [1, 2] + [3, 6]/6 = [1.5, 3]
    r = s.apply(f32(1, 2), 3, upd([3, 6], base=1))
    assert r.stepped and r.version == 4
    np.testing.assert_allclose(r.model, [1.5, 3.0], rtol=1e-7)
    assert r.model.dtype == np.float32


def test_fedasync_sample_weighting_caps_at_one() -> None:
    s = FedAsync(alpha=1.0, reference_samples=100)
    np.testing.assert_array_equal(s.apply(f32(0), 0, upd([4], n=25)).model, f32(1))  # 25/100
    np.testing.assert_array_equal(s.apply(f32(0), 0, upd([4], n=400)).model, f32(4))  # capped


def test_fedasync_does_not_mutate_input() -> None:
    model = f32(1, 1)
    FedAsync(alpha=1.0).apply(model, 0, upd([1, 1]))
    np.testing.assert_array_equal(model, f32(1, 1))


# --- FedBuff --------------------------------------------------------------------------------


def test_fedbuff_buffers_then_steps() -> None:
    s = FedBuff(buffer_size=2, server_lr=2.0, staleness=lambda t: polynomial(t, 1.0))
    r1 = s.apply(f32(0, 0), 1, upd([2, 4], base=1))  # tau 0, s=1
    assert not r1.stepped and r1.version == 1 and s.pending == 1
    r2 = s.apply(f32(0, 0), 1, upd([6, 0], base=0))  # tau 1, s=1/2 -> [3, 0]
    # g = ([2,4] + [3,0]) / 2 = [2.5, 2]; x = 0 + 2 * g = [5, 4]
    assert r2.stepped and r2.version == 2 and s.pending == 0
    np.testing.assert_array_equal(r2.model, f32(5, 4))


def test_fedbuff_momentum_hand_computed() -> None:
    s = FedBuff(buffer_size=1, server_lr=1.0, momentum=0.5)
    r = s.apply(f32(0), 0, upd([2]))  # m = 2, x = 2
    r = s.apply(r.model, r.version, upd([2], base=1))  # m = 0.5*2 + 2 = 3, x = 5
    np.testing.assert_array_equal(r.model, f32(5))
    assert r.version == 2


def test_fedbuff_sample_weighted() -> None:
    s = FedBuff(buffer_size=2, sample_weighted=True)
    s.apply(f32(0), 0, upd([1], n=1))
    r = s.apply(f32(0), 0, upd([4], n=3))  # (1*1 + 3*4) / 4 = 3.25
    np.testing.assert_array_equal(r.model, f32(3.25))


# --- FedAvg ---------------------------------------------------------------------------------


def test_fedavg_sample_weighted_mean_exact() -> None:
    s = FedAvg(round_size=3)
    m = f32(1, 1)
    assert not s.apply(m, 5, upd([1, 0], base=5, n=1)).stepped
    assert not s.apply(m, 5, upd([0, 2], base=5, n=2)).stepped
    r = s.apply(m, 5, upd([4, 4], base=5, n=5))
    # mean = ([1,0] + [0,4] + [20,20]) / 8 = [21/8, 24/8] = [2.625, 3]
    assert r.stepped and r.version == 6
    np.testing.assert_array_equal(r.model, f32(3.625, 4.0))


def test_fedavg_rejects_old_round() -> None:
    s = FedAvg(round_size=2)
    with pytest.raises(RejectedUpdate) as err:
        s.apply(f32(0), 3, upd([1], base=2))
    assert err.value.reason is Reason.STALE


def test_fedavg_deadline_via_tick() -> None:
    s = FedAvg(round_size=10, deadline_s=5.0, min_updates=2)
    m = f32(0)
    assert not s.tick(m, 0, now=100.0).stepped  # round clock starts
    s.apply(m, 0, upd([2], n=1))
    assert not s.tick(m, 0, now=106.0).stepped  # deadline passed but only 1 < min_updates
    s.apply(m, 0, upd([4], n=1))
    assert not s.tick(m, 0, now=104.0).stepped  # before the deadline
    r = s.tick(m, 0, now=105.0)
    assert r.stepped and r.version == 1
    np.testing.assert_array_equal(r.model, f32(3))
    assert s.pending == 0


def test_fedprox_alias_carries_mu() -> None:
    s = make_strategy("fedprox", {"round_size": 2, "fedprox_mu": 0.01})
    assert isinstance(s, FedAvg) and s.fedprox_mu == 0.01


def test_make_strategy_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"strategy\.name"):
        make_strategy("fedsgd")
    with pytest.raises(ConfigError, match="bogus"):
        make_strategy("fedbuff", {"bogus": 1})
    with pytest.raises(ConfigError, match=r"strategy\.staleness"):
        make_strategy("fedavg", None, {"function": "constant"})


# --- one suite over every strategy: state_dict round trip mid-buffer ------------------------


def _all() -> list[Strategy]:
    return [
        FedAsync(alpha=0.7, staleness=make_staleness("polynomial", {"a": 0.5})),
        FedBuff(buffer_size=3, momentum=0.9, staleness=make_staleness("hinge", {"a": 2, "b": 1})),
        FedAvg(round_size=3),
    ]


@pytest.mark.parametrize("index", range(3))
def test_state_dict_round_trip_reproduces_run(index: int) -> None:
    rng = np.random.default_rng(index)
    deltas = rng.standard_normal((8, 5)).astype(np.float32)

    def run(split_at: int | None) -> np.ndarray:
        s, model, version = _all()[index], np.zeros(5, np.float32), 0
        for i, d in enumerate(deltas):
            if i == split_at:
                fresh = _all()[index]
                fresh.load_state_dict(s.state_dict())
                s = fresh
            r = s.apply(model, version, AdmittedUpdate("d", i, version, 1 + i, d))
            model, version = r.model, r.version
        return model

    np.testing.assert_array_equal(run(None), run(4))


# --- invariants -----------------------------------------------------------------------------

vectors = st.lists(
    st.lists(st.floats(-100, 100, width=32), min_size=3, max_size=3), min_size=1, max_size=6
)


@settings(max_examples=60, deadline=None)
@given(vectors, st.lists(st.integers(1, 1000), min_size=6, max_size=6))
def test_fedbuff_fresh_k_equals_n_is_fedavg(deltas: list[list[float]], samples: list[int]) -> None:
    n = len(deltas)
    model = np.full(3, 0.5, np.float32)
    buff = FedBuff(buffer_size=n, server_lr=1.0, sample_weighted=True)
    avg = FedAvg(round_size=n)
    rb = ra = None
    for d, k in zip(deltas, samples, strict=False):
        rb = buff.apply(model, 0, upd(d, n=k))
        ra = avg.apply(model, 0, upd(d, n=k))
    assert rb is not None and ra is not None and rb.stepped and ra.stepped
    np.testing.assert_array_equal(rb.model, ra.model)
    expected = (
        model.astype(np.float64)
        + np.average(np.array(deltas, np.float32).astype(np.float64), axis=0, weights=samples[:n])
    ).astype(np.float32)
    # float32 accumulation vs a float64 reference: a few float32 ulps of the largest partial sum
    np.testing.assert_allclose(ra.model, expected, rtol=1e-5, atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(vectors)
def test_fedasync_alpha_one_fresh_sums_deltas(deltas: list[list[float]]) -> None:
    s, model, version = FedAsync(alpha=1.0), np.zeros(3, np.float32), 0
    for d in deltas:
        r = s.apply(model, version, upd(d, base=version))
        model, version = r.model, r.version
    assert version == len(deltas)
    np.testing.assert_allclose(model, np.sum(np.array(deltas, np.float32), axis=0), atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(vectors, st.integers(0, 5))
def test_fedavg_order_invariant(deltas: list[list[float]], rotate: int) -> None:
    pairs = [(d, i % 3 + 1) for i, d in enumerate(deltas)]  # (delta, samples) travel together
    n = len(pairs)
    results = []
    for ps in (pairs, [pairs[(i + rotate) % n] for i in range(n)]):
        s, r = FedAvg(round_size=n), None
        for d, k in ps:
            r = s.apply(np.zeros(3, np.float32), 0, upd(d, n=k))
        assert r is not None and r.stepped
        results.append(r.model)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-5)


def test_zero_delta_is_identity_for_every_strategy() -> None:
    for s in _all():
        model = f32(1, 2, 3, 4, 5)
        r = None
        for i in range(3):
            r = s.apply(model, 0, AdmittedUpdate("d", i, 0, 2, np.zeros(5, np.float32)))
        assert r is not None
        np.testing.assert_array_equal(r.model, model)
