"""Robust aggregation options (server/robust): hand-computed aggregates, the adaptive norm bound,
one update per device per buffer, state round trips, and the admission path end to end."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from protocol.errors import ConfigError, Reason, RejectedUpdate
from server.admission import Admission, AdmissionLimits
from server.core import ServerCore
from server.robust import (
    AdaptiveNormBound,
    Aggregator,
    BoundAction,
    RobustConfig,
    aggregate,
)
from server.staleness import make_staleness
from server.strategies import AdmittedUpdate, FedAsync, FedAvg, FedBuff, make_strategy
from tests.unit.server.defended_buffer import DefendedBuffer
from tests.unit.server.factory import make_manifest, update_bytes


def upd(delta: Sequence[float], dev: str = "d", base: int = 0, seq: int = 1) -> AdmittedUpdate:
    return AdmittedUpdate(dev, seq, base, 1, np.array(delta, np.float32))


def f32(*xs: float) -> np.ndarray:
    return np.array(xs, np.float32)


NO_NORM = RobustConfig(norm_multiplier=None)

# --- aggregators ----------------------------------------------------------------------------


def test_aggregators_hand_computed() -> None:
    rows = np.array([[1, 10], [2, 20], [3, 30], [4, 40], [100, -1000]], np.float32)
    np.testing.assert_array_equal(aggregate(rows, Aggregator.MEAN), f32(22, -180))
    np.testing.assert_array_equal(aggregate(rows, Aggregator.MEDIAN), f32(3, 20))
    # trim 0.2 of 5 rows = 1 per end: column 0 keeps 2,3,4; column 1 keeps 10,20,30
    np.testing.assert_array_equal(aggregate(rows, Aggregator.TRIMMED_MEAN, 0.2), f32(3, 20))
    # trim 0.1 of 5 rows rounds down to 0: the plain mean
    np.testing.assert_array_equal(aggregate(rows, Aggregator.TRIMMED_MEAN, 0.1), f32(22, -180))


@settings(max_examples=60, deadline=None)
@given(
    honest=arrays(np.float32, (7, 3), elements=st.floats(-1, 1, width=32)),
    hostile=arrays(np.float32, (2, 3), elements=st.floats(-1e6, 1e6, width=32)),
)
def test_robust_aggregates_stay_in_the_honest_range(
    honest: np.ndarray, hostile: np.ndarray
) -> None:
    """Two hostile rows of nine, anywhere: median and 0.25-trimmed mean stay in honest range."""
    rows = np.concatenate([honest, hostile])
    lo, hi = honest.min(axis=0), honest.max(axis=0)
    for kind in (Aggregator.MEDIAN, Aggregator.TRIMMED_MEAN):
        g = aggregate(rows, kind, 0.25)
        assert np.all(g >= lo - 1e-6) and np.all(g <= hi + 1e-6), kind


# --- adaptive norm bound --------------------------------------------------------------------


def test_norm_bound_warms_up_then_clips_to_a_multiple_of_the_median() -> None:
    b = AdaptiveNormBound(multiplier=3.0, window=5, warmup=3)
    assert b.screen(1e6) == 1.0  # warming up: only the fixed bound applies
    for norm in (1.0, 2.0, 4.0):
        b.record(norm)
    assert b.bound == 6.0  # 3 x median(1, 2, 4)
    assert b.screen(5.0) == 1.0
    assert b.screen(12.0) == 0.5
    for norm in (10.0, 10.0, 10.0):  # the window keeps the last 5: 2, 4, 10, 10, 10
        b.record(norm)
    assert b.bound == 30.0


def test_norm_bound_ignores_zero_deltas_so_it_never_refuses_every_update() -> None:
    """Defect: devices whose data the model already fits send zero deltas; once they filled half
    the window the bound was 3 x 0 = 0 and every later update was refused (Reason.NORM), so the
    model froze (parity.py, wine, 8 devices, Dirichlet 0.1, seed 2: 55 updates in two hours)."""
    b = AdaptiveNormBound(multiplier=3.0, window=5, warmup=3)
    for _ in range(5):
        b.record(0.0)
    assert b.bound is None  # still warming up: zeros say nothing about an update's length
    assert b.screen(2.0) == 1.0
    for norm in (0.0, 1.0, 0.0, 2.0, 0.0, 4.0):
        b.record(norm)
    assert b.bound == 6.0  # 3 x median(1, 2, 4): the zeros were not counted
    assert b.screen(12.0) == 0.5
    again = AdaptiveNormBound(multiplier=3.0, window=5, warmup=3)
    again.load_state_dict(np.array([0.0, 0.0, 0.0, 1.0, 2.0, 4.0]))  # an older checkpoint
    assert again.bound == 6.0


def test_norm_bound_reject_and_non_finite() -> None:
    b = AdaptiveNormBound(multiplier=2.0, window=4, warmup=1, action=BoundAction.REJECT)
    b.record(1.0)
    with pytest.raises(RejectedUpdate) as exc:
        b.screen(2.5)
    assert exc.value.reason is Reason.NORM and "adaptive bound" in exc.value.detail
    with pytest.raises(RejectedUpdate) as exc:
        b.screen(math.inf)
    assert exc.value.reason is Reason.NORM


# --- strategies -----------------------------------------------------------------------------


def test_fedbuff_trimmed_mean_ignores_an_outlier_and_weights_staleness() -> None:
    s = FedBuff(
        buffer_size=5,
        staleness=make_staleness("polynomial", {"a": 1.0}),
        robust=RobustConfig(
            Aggregator.TRIMMED_MEAN, trim_fraction=0.2, norm_multiplier=None, sign_agreement=False
        ),
    )
    model, r = f32(0, 0), None
    deltas = ([1, 1], [2, 3], [3, 2], [-1000, -1000])
    for i, d in enumerate(deltas):
        r = s.apply(model, 1, upd(d, dev=f"d{i}", base=1))
        assert not r.stepped
    # tau = 1 -> s = 1/2: the row is [4, 4] * 0.5 = [2, 2]
    r = s.apply(model, 1, upd([4, 4], dev="d4", base=0))
    assert r.stepped and r.version == 2
    # rows per column: 1, 2, 3, -1000, 2 -> drop -1000 and 3 -> mean(1, 2, 2) = 5/3
    #                  1, 3, 2, -1000, 2 -> drop -1000 and 3 -> mean(1, 2, 2) = 5/3
    np.testing.assert_allclose(r.model, [5 / 3, 5 / 3], rtol=1e-6)
    scores = {sc.device_id: sc.cosine for sc in s.defence.scores}  # type: ignore[union-attr]
    assert scores["d3"] == pytest.approx(-1.0) and scores["d0"] == pytest.approx(1.0)


def test_robust_mean_equals_plain_fedbuff() -> None:
    """Rows with the mean aggregator are the plain running sum: the same model bit for bit."""
    rng = np.random.default_rng(0)
    plain = FedBuff(buffer_size=3, momentum=0.5, staleness=make_staleness("polynomial", {}))
    rows = FedBuff(
        buffer_size=3,
        momentum=0.5,
        staleness=make_staleness("polynomial", {}),
        robust=RobustConfig(
            aggregator=Aggregator.TRIMMED_MEAN,
            trim_fraction=0.0,
            norm_multiplier=None,
            sign_agreement=False,
        ),
    )
    a = b = np.zeros(8, np.float32)
    va = vb = 0
    for i in range(9):
        u = AdmittedUpdate(
            f"d{i}", 1, max(0, va - i % 2), 1, rng.standard_normal(8).astype(np.float32)
        )
        ra, rb = plain.apply(a, va, u), rows.apply(b, vb, u)
        a, va, b, vb = ra.model, ra.version, rb.model, rb.version
    assert va == vb == 3
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_one_update_per_device_per_buffer() -> None:
    s = FedBuff(buffer_size=3, robust=NO_NORM)
    assert s.screen("a", 1.0) == 1.0
    s.apply(f32(0), 0, upd([1], dev="a"))
    with pytest.raises(RejectedUpdate) as exc:
        s.screen("a", 1.0)
    assert exc.value.reason is Reason.DEVICE_LIMIT
    s.apply(f32(0), 0, upd([1], dev="b"))
    s.apply(f32(0), 0, upd([1], dev="c"))  # the buffer flushes: "a" may send again
    assert s.screen("a", 1.0) == 1.0
    # FedAsync has no buffer: the same device may send every step
    fa = FedAsync(robust=NO_NORM)
    fa.apply(f32(0), 0, upd([1], dev="a"))
    assert fa.screen("a", 1.0) == 1.0


def test_fedavg_robust_median_round() -> None:
    s = FedAvg(
        round_size=3, robust=RobustConfig(aggregator=Aggregator.MEDIAN, sign_agreement=False)
    )
    s.apply(f32(0), 0, upd([1], dev="a"))
    s.apply(f32(0), 0, upd([2], dev="b"))
    r = s.apply(f32(0), 0, upd([-500], dev="c"))
    assert r.stepped
    np.testing.assert_array_equal(r.model, f32(1))


def test_fedasync_adaptive_bound_clips_through_screen() -> None:
    s = FedAsync(robust=RobustConfig(norm_multiplier=2.0, norm_warmup=2, norm_window=10))
    s.apply(f32(0), 0, upd([1], dev="a"))
    s.apply(f32(0), 1, upd([3], dev="b", base=1))
    assert s.screen("c", 8.0) == 0.5  # 2 x median(1, 3) = 4


@pytest.mark.parametrize("name", ["fedbuff", "fedavg", "fedasync"])
def test_state_round_trip_mid_buffer(name: str) -> None:
    """A checkpoint mid-buffer restores rows, devices and norms: the next step is identical."""
    rng = np.random.default_rng(1)
    params = (
        {"buffer_size": 4} if name == "fedbuff" else {"round_size": 4} if name == "fedavg" else {}
    )
    robust = {"aggregator": "median", "norm_warmup": 2}
    a = make_strategy(name, params, None, robust)
    ups = [
        AdmittedUpdate(f"d{i}", 1, 0, 1, rng.standard_normal(6).astype(np.float32))
        for i in range(4)
    ]
    model = np.zeros(6, np.float32)
    for u in ups[:3]:
        a.apply(model, 0, u)
    b = make_strategy(name, params, None, robust)
    b.load_state_dict(a.state_dict())
    ra, rb = a.apply(model, 0, ups[3]), b.apply(model, 0, ups[3])
    np.testing.assert_array_equal(ra.model, rb.model)
    assert a.screen("x", 5.0) == b.screen("x", 5.0)
    if name != "fedasync":
        with pytest.raises(RejectedUpdate):
            b.load_state_dict(a.state_dict() | {"buffer.devices": "d0"})
            b.screen("d0", 0.1)


def test_config_keys_and_errors() -> None:
    s = make_strategy("fedbuff", {}, None, {})
    assert isinstance(s, FedBuff) and s.robust == RobustConfig()
    assert make_strategy("fedbuff", {}, None, {"enabled": False}).defence is None  # type: ignore[attr-defined]
    off = make_strategy("fedbuff", {}, None, {"norm_multiplier": 0})
    assert off.robust.norm_multiplier is None  # type: ignore[attr-defined]
    for bad, key in (
        ({"aggregator": "mode"}, "aggregator"),
        ({"trim_fraction": 0.5}, "trim_fraction"),
        ({"norm_multiplier": 0.5}, "norm_multiplier"),
        ({"norm_windw": 3}, "norm_windw"),
        ({"one_per_device": "yes"}, "one_per_device"),
    ):
        with pytest.raises(ConfigError, match=key):
            make_strategy("fedbuff", {}, None, bad)
    with pytest.raises(ConfigError, match="sample_weighted"):
        make_strategy("fedbuff", {"sample_weighted": True}, None, {})


# --- admission and the durable core -----------------------------------------------------------


def test_admission_applies_the_adaptive_clip_once_and_logs_it(tmp_path: Path) -> None:
    """Fixed clip then adaptive clip, one scale in the log: recovery reproduces the model."""
    manifest = make_manifest(4)
    robust = {"norm_multiplier": 2.0, "norm_warmup": 2, "one_per_device": True}

    # the initial model's length (20) makes the warm-up bound 0.1 x 20 = 2 (norm_bound.py
    # `initial_bound`): the first two updates (norm 1) pass it untouched
    initial = np.array([20, 0, 0, 0], np.float32)

    def core(state: Path) -> ServerCore:
        c = ServerCore(
            manifest,
            initial,
            make_strategy("fedbuff", {"buffer_size": 2}, None, robust),
            state,
            AdmissionLimits(max_norm=100.0, max_staleness=None),
        )
        c.recover()
        return c

    c = core(tmp_path / "a")
    seqs = {"a": 0, "b": 0}
    sent: list[tuple[str, list[float]]] = [
        ("a", [1, 0, 0, 0]),
        ("b", [0, 1, 0, 0]),
        ("a", [0, 0, 3, 4]),
        ("a", [1, 1, 1, 1]),
        ("b", [0, 0, 0, 1000]),
    ]
    acks = []
    for dev, delta in sent:
        seqs[dev] += 1
        acks.append(c.handle(dev, update_bytes(manifest, delta, device=dev, seq=seqs[dev])).ack)
    assert [a.accepted for a in acks] == [True, True, True, False, True]
    assert acks[3].reason is Reason.DEVICE_LIMIT
    # 3rd: norm 5 > 2 x median(1, 1) -> clipped to 2: [0, 0, 1.2, 1.6]; the 4th is refused;
    # 5th: fixed clip 1000 -> 100, then adaptive 2 x median(1, 1, 2) = 2: [0, 0, 0, 2]
    np.testing.assert_allclose(c.model - initial, [0.5, 0.5, 0.6, 1.8], rtol=1e-6, atol=1e-6)
    model = c.model.copy()
    c.close()
    again = core(tmp_path / "a")  # recovery: checkpoint + log replay
    np.testing.assert_array_equal(again.model, model)
    assert again.strategy.state_dict()["robust_norms"].tolist() == pytest.approx([1, 1, 2, 2])
    again.close()


def test_admission_screen_reads_state_only() -> None:
    manifest = make_manifest(4)
    s = FedBuff(buffer_size=2, robust=RobustConfig(norm_multiplier=None))
    adm = Admission(manifest, AdmissionLimits())
    payload = update_bytes(manifest, [1, 1, 1, 1], device="a")
    for _ in range(2):  # admitting twice without applying: nothing was recorded
        adm.admit("a", payload, version=0, sequences={}, strategy=s)
    assert s.pending == 0


# --- server.toml --------------------------------------------------------------------------------


def test_example_toml_documents_exactly_the_default_defence() -> None:
    from server.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[3] / "server" / "example.toml")
    s = make_strategy(cfg.strategy, cfg.strategy_params, cfg.staleness or None, cfg.robust)
    assert isinstance(s, FedBuff) and s.robust == RobustConfig()
    assert RobustConfig.from_mapping(RobustConfig().to_mapping()) == RobustConfig()


def test_server_toml_robust_errors_name_the_key(tmp_path: Path) -> None:
    from server.config import parse_config

    base = {"fleet": "f", "artifacts": "a", "signing_key": "k", "state_dir": "s"}
    for table, key in (
        ({"aggregator": "avg"}, "robust.aggregator"),
        ({"norm_action": "drop"}, "robust.norm_action"),
        ({"norm_window": 1.5}, "robust.norm_window"),
        ("median", "strategy.robust"),
    ):
        with pytest.raises(ConfigError, match=key):
            parse_config(base | {"strategy": {"name": "fedbuff", "robust": table}}, tmp_path)
    cfg = parse_config(
        base | {"strategy": {"name": "fedavg", "robust": {"enabled": False}}}, tmp_path
    )
    assert cfg.robust == {"enabled": False}


def test_compressed_updates_feed_the_robust_buffer(tmp_path: Path) -> None:
    """int8 and top-k + int8 deltas decode before the strategy sees them: median of the rows."""
    manifest = make_manifest(8)
    core = ServerCore(
        manifest,
        np.zeros(8, np.float32),
        make_strategy("fedbuff", {"buffer_size": 3}, None, {}),
        tmp_path,
        AdmissionLimits(max_staleness=None),
    )
    core.recover()
    int8 = {"name": "int8", "chunk": 256}
    topk = {"name": "topk", "fraction": 0.5, "values": int8}
    deltas = [np.arange(8, dtype=np.float32), np.ones(8, np.float32), -50 * np.ones(8, np.float32)]
    for i, (delta, codec) in enumerate(zip(deltas, (int8, topk, int8), strict=True)):
        ack = core.handle(f"d{i}", update_bytes(manifest, delta, device=f"d{i}", codec=codec)).ack
        assert ack.accepted, ack
    assert core.version == 1
    # per coordinate the median of three rows ignores the -50 row: within int8 error of the
    # median of (0..7, top-k half of ones, ...) -- every coordinate is in the honest range
    assert np.all(core.model >= -1e-6) and np.all(core.model <= 7.01)
    core.close()


def test_each_flush_logs_a_score_per_device(caplog: pytest.LogCaptureFixture) -> None:
    s = FedBuff(buffer_size=3, robust=RobustConfig(norm_multiplier=2.0, norm_warmup=1))
    with caplog.at_level("INFO", logger="server.robust"):
        for dev, d in (("good-1", [1, 1]), ("good-2", [1, 2]), ("flipper", [-2, -2])):
            s.apply(f32(0, 0), 0, upd(d, dev=dev))
    line = next(r.getMessage() for r in caplog.records if r.name == "server.robust")
    scores = {dev: float(cos) for dev, cos in re.findall(r"(\S+) ([+-]\d\.\d\d) \d", line)}
    assert scores["flipper"] < -0.95 and scores["good-1"] > 0.95 and scores["good-2"] > 0.95
    assert [sc.device_id for sc in s.defence.scores] == ["good-1", "good-2", "flipper"]  # type: ignore[union-attr]


def test_cosine_aggregate_hand_computed() -> None:
    """m = median = [3, 4]; row norms 5, 10, 5 -> r = 5; rows . m = 25, 50, -25 -> the third row
    disagrees; g = (5/5 * [3, 4] + 5/10 * [6, 8]) / 2 = [3, 4]."""
    rows = np.array([[3, 4], [6, 8], [-3, -4]], np.float32)
    np.testing.assert_allclose(aggregate(rows, Aggregator.COSINE), f32(3, 4), rtol=1e-6)


def test_cosine_aggregate_clips_rows_to_the_median_norm_and_counts_each_once() -> None:
    """m = [2, 2]; row norms 2, 2, 2.83 -> r = 2; every row agrees, the third is cut to r:
    g = ([2, 0] + [0, 2] + (2 / 2.83) * [2, 2]) / 3 = [(2 + 1.414) / 3] * 2 = [1.138] * 2."""
    rows = np.array([[2, 0], [0, 2], [2, 2]], np.float32)
    expected = (2 + math.sqrt(2)) / 3
    np.testing.assert_allclose(
        aggregate(rows, Aggregator.COSINE), f32(expected, expected), rtol=1e-6
    )
    assert expected == pytest.approx(1.1381, abs=1e-4)


def test_cosine_aggregate_keeps_the_length_of_agreeing_rows() -> None:
    """Defect: FLTrust's weighting rescaled every row to the median's norm |m|, which is shorter
    than the rows when they differ (here |m| = 1 against rows of norm 3.16): the defended step
    was |m| / r = 0.32x the mean's, and on benchmarks/fleet.py (0.57x) the fleet lost its
    advantage over FedAvg (5.40x -> 3.64x). Agreeing rows of equal norm now average to the mean."""
    rows = np.array([[1, 3, 0, 0], [1, 0, 3, 0], [1, 0, 0, 3]], np.float32)
    np.testing.assert_allclose(aggregate(rows, Aggregator.COSINE), rows.mean(axis=0), rtol=1e-6)


def test_cosine_aggregate_counts_a_weakly_agreeing_row_as_much_as_a_strong_one() -> None:
    """Defect: FLTrust weighted each row by its cosine with the median, so on a skewed fleet the
    rows of a rare class (small positive cosine) barely counted (parity.py: sensor, 100 devices,
    Dirichlet 0.1, 0.55x central). Two rows along the majority, one mostly along its own axis:
    cosines 1, 1, 0.1; equal norms; each counts 1/3."""
    common, own = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    rare = 0.1 * common + math.sqrt(1 - 0.01) * own
    rows = np.array([common, common, rare], np.float32)
    g = aggregate(rows, Aggregator.COSINE)
    np.testing.assert_allclose(g, rows.mean(axis=0), rtol=1e-6)
    assert g[1] == pytest.approx(rare[1] / 3, rel=1e-6)


def test_cosine_aggregate_keeps_the_staleness_discount_of_stale_rows() -> None:
    """Defect: rows are s(tau) * delta, and a cut at the median ROW length shortened the fresh
    rows most (fleet.py: 4.82x FedAvg's speed against 5.40x undefended). Three equal deltas
    [3, 4] at weights 1, 0.5, 0.25: the median delta length is 5, every row is within w_i * 5,
    so g is the plain mean of the rows; cut at the median row length 2.5 the fresh row lost half."""
    w = np.array([1.0, 0.5, 0.25])
    rows = (w[:, None] * np.array([3.0, 4.0])).astype(np.float32)
    g = aggregate(rows, Aggregator.COSINE, weights=w)
    np.testing.assert_allclose(g, rows.mean(axis=0), rtol=1e-6)
    cut_by_row_length = aggregate(rows, Aggregator.COSINE)  # no weights: all 1
    np.testing.assert_allclose(cut_by_row_length, f32(1.25, 5 / 3), rtol=1e-6)


def test_fedbuff_hands_the_defence_each_rows_staleness_weight() -> None:
    """Through FedBuff: the same delta from a fresh and two stale devices (polynomial
    staleness) aggregates to the staleness-weighted mean; nothing is cut."""
    s = FedBuff(
        buffer_size=3,
        staleness=make_staleness("polynomial", {"a": 0.5}),
        robust=RobustConfig(norm_multiplier=None),
    )
    model = np.zeros(2, np.float32)
    for dev, base in (("fresh", 8), ("stale-1", 5), ("stale-2", 0)):
        r = s.apply(model, 8, upd([3, 4], dev=dev, base=base))
    weights = np.array([1.0, 4.0**-0.5, 9.0**-0.5])
    expected = weights.mean() * np.array([3.0, 4.0])
    np.testing.assert_allclose(r.model, expected, rtol=1e-5)


def test_buffer_state_keeps_the_row_weights_and_checks_them() -> None:
    d = DefendedBuffer(RobustConfig())
    d.accept("a", 1.0)
    d.add_row(f32(3, 4), 1.0)
    d.accept("b", 1.0)
    d.add_row(f32(1.5, 2), 0.5)
    state = d.state_dict()
    np.testing.assert_array_equal(state["buffer.row_weights"], [1.0, 0.5])
    again = DefendedBuffer(RobustConfig())
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.reduce(), d.reduce())
    old = {k: v for k, v in state.items() if k != "buffer.row_weights"}  # an older checkpoint
    again.load_state_dict(old)  # loads: every weight 1
    for bad in (np.array([1.0]), np.array([1.0, 0.0]), np.array([1.0, np.nan])):
        with pytest.raises(ValueError, match="row_weights"):
            again.load_state_dict(state | {"buffer.row_weights": bad})


def test_cosine_aggregate_cuts_a_boosted_agreeing_row_to_the_median_norm() -> None:
    """Without an adaptive norm bound (the `cosine` preset) a row boosted x50 along the honest
    direction agrees with the median, but weighs no more than a median-length row."""
    honest = np.array([[1, 1], [1, 1.2], [1.2, 1]], np.float32)
    boosted = 50 * honest[:1]
    g = aggregate(np.vstack([honest, boosted]), Aggregator.COSINE)
    assert np.linalg.norm(g) <= 1.01 * np.linalg.norm(honest, axis=1).max()


def test_cosine_aggregate_of_sparse_rows_without_a_majority_still_steps() -> None:
    """Defect: four top-k rows with disjoint supports have a zero coordinate-wise median, and an
    aggregate rescaled to |m| = 0 stepped by nothing at all; every row counts once: the mean."""
    rows = 3 * np.eye(4, dtype=np.float32)
    np.testing.assert_allclose(aggregate(rows, Aggregator.COSINE), np.full(4, 0.75), rtol=1e-6)


def test_cosine_aggregate_of_opposed_rows_without_a_median_is_their_mean() -> None:
    rows = np.array([[1, -1], [-1, 1], [0, 0]], np.float32)  # m = [0, 0]: every non-zero row
    np.testing.assert_allclose(aggregate(rows, Aggregator.COSINE), f32(0, 0), atol=1e-7)


def test_cosine_aggregate_of_noisy_top_k_rows_follows_the_mean() -> None:
    """Top-5% rows of a shared direction under heavy noise: each keeps a different part of the
    support and no coordinate has a majority, so the median is zero. The old aggregate stepped
    by nothing; now it follows the plain mean's direction at about its length."""
    rng = np.random.default_rng(0)
    common = rng.standard_normal(2_000)
    rows = np.zeros((10, 2_000), np.float32)
    for i in range(10):
        full = common + 2 * rng.standard_normal(2_000)
        top = np.argsort(-np.abs(full))[:100]
        rows[i, top] = full[top]
    assert not np.median(rows, axis=0).any()
    g, mean = aggregate(rows, Aggregator.COSINE), rows.mean(axis=0)
    cos = float(g @ mean) / (np.linalg.norm(g) * np.linalg.norm(mean))
    assert cos > 0.99
    assert 0.8 * np.linalg.norm(mean) < np.linalg.norm(g) < 1.05 * np.linalg.norm(mean)


def test_a_strategy_warms_the_robust_kernels_only_when_its_defence_keeps_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ServerApp.start asks the strategy to warm up; only a defence that aggregates rows
    coordinate-wise needs the robust kernels (the plain mean and FedAsync never call them)."""
    from server.strategies import defended

    warmed: list[int] = []
    monkeypatch.setattr(defended, "warm_up_kernels", warmed.append)
    stale = make_staleness("polynomial", {"a": 0.5})
    FedBuff(buffer_size=3, staleness=stale, robust=RobustConfig()).warm_up(1 << 20)
    FedBuff(
        buffer_size=3, staleness=stale, robust=RobustConfig(aggregator=Aggregator.MEAN)
    ).warm_up(7)
    FedBuff(buffer_size=3, staleness=stale).warm_up(8)
    FedAsync(staleness=stale, robust=RobustConfig()).warm_up(9)
    assert warmed == [1 << 20]


def test_the_warm_up_bound_comes_from_the_initial_model() -> None:
    from server.robust.norm_bound import initial_bound

    assert initial_bound(np.array([30, 40], np.float32)) == pytest.approx(5.0)  # 0.1 x 50
    assert initial_bound(np.zeros(400, np.float32)) == pytest.approx(0.2)  # 0.1 x 0.1 x 20
    bound = AdaptiveNormBound(multiplier=3.0, window=10, warmup=2)
    assert bound.bound is None  # no prior: as before, nothing until the warm-up is over
    bound.start_from(np.array([30, 40], np.float32))
    assert bound.bound == pytest.approx(5.0) and bound.screen(10.0) == pytest.approx(0.5)
    bound.record(1.0)
    bound.record(2.0)
    assert bound.bound == pytest.approx(4.5)  # warmed up: 3 x median(1, 2)
