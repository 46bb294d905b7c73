"""The serving average (hand-computed), and WAL replay reproducing optimiser + serving state."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from server.core import ServerCore
from server.optimizers import LrSchedule, OptimizerName, ScheduleName, ServerOptimizer
from server.serving import ServingAverage
from server.strategies import FedAvg, FedBuff
from server.strategies.base import Strategy
from tests.unit.server.factory import make_manifest, update_bytes


def f32(*xs: float) -> np.ndarray:
    return np.array(xs, np.float32)


def test_polyak_mean_then_ema_hand_computed() -> None:
    s = ServingAverage(decay=0.5)
    s.observe(f32(2))  # k=1: d = 0 -> 2
    np.testing.assert_array_equal(s.model(f32(99)), f32(2))
    s.observe(f32(4))  # k=2: d = min(0.5, 1/2) -> uniform mean 3
    np.testing.assert_array_equal(s.model(f32(99)), f32(3))
    s.observe(f32(7))  # k=3: d = min(0.5, 2/3) = 0.5 -> 0.5*3 + 0.5*7 = 5 (EMA now)
    np.testing.assert_array_equal(s.model(f32(99)), f32(5))
    assert s.seen == 3


def test_uniform_mean_during_warmup() -> None:
    s = ServingAverage(decay=0.9)  # horizon 10: the first 10 versions are a plain mean
    for v in range(1, 11):
        s.observe(f32(v))
    np.testing.assert_allclose(s.model(f32(0)), f32(5.5), rtol=1e-6)


def test_disabled_serves_the_iterate_and_nothing_seen_serves_the_iterate() -> None:
    off = ServingAverage(0.0)
    off.observe(f32(1))
    np.testing.assert_array_equal(off.model(f32(8)), f32(8))
    np.testing.assert_array_equal(ServingAverage(0.9).model(f32(8)), f32(8))


def test_bad_decay_and_state_refused() -> None:
    with pytest.raises(ValueError, match="decay"):
        ServingAverage(1.0)
    with pytest.raises(ValueError, match="avg"):
        ServingAverage(0.5).load_state_dict({"seen": 1, "avg": np.zeros(2, np.float64)})


def test_averaging_cancels_a_swing() -> None:
    # An iterate that alternates around 1.0 (a skewed fleet pulling two ways): the serving
    # model sits near the centre while the iterate is 0.5 away every version.
    s = ServingAverage(0.9)
    for v in range(200):
        s.observe(f32(1.5 if v % 2 else 0.5))
    assert abs(float(s.model(f32(0))[0]) - 1.0) < 0.05


# --- durable replay ---------------------------------------------------------------------------

M = make_manifest(6)


def _adam_fedbuff() -> Strategy:
    opt = ServerOptimizer(
        OptimizerName.ADAM,
        lr=0.05,
        beta2=0.99,
        schedule=LrSchedule(ScheduleName.COSINE, total_steps=7, warmup_steps=2),
    )
    return FedBuff(buffer_size=2, optimizer=opt)


def _yogi_fedavg() -> Strategy:
    return FedAvg(round_size=2, optimizer=ServerOptimizer(OptimizerName.YOGI, lr=0.1))


def _core(state: Path, make: Callable[[], Strategy], every: int) -> ServerCore:
    core = ServerCore(
        M, np.zeros(6, np.float32), make(), state, checkpoint_every=every,
        serving=ServingAverage(0.8),
    )  # fmt: skip
    core.recover()
    return core


def _deltas(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.normal(size=6).astype(np.float32) for _ in range(count)]


@pytest.mark.parametrize("make", [_adam_fedbuff, _yogi_fedavg])
def test_wal_replay_reproduces_optimizer_and_serving_state_bit_for_bit(
    tmp_path: Path, make: Callable[[], Strategy]
) -> None:
    deltas = _deltas(11)
    live = _core(tmp_path / "live", make, every=4)  # checkpoints mid-way, the rest in the log
    for seq, d in enumerate(deltas, start=1):
        out = live.handle("dev-1", update_bytes(M, d, seq=seq, base=live.version))
        assert out.ack.accepted
        live.maybe_checkpoint()
    assert live.version == 5  # 11 updates, 2 per step; one buffered
    model, serving = live.model.copy(), live.serving_model.copy()
    opt_state, serving_state = live.strategy.state_dict(), live.serving.state_dict()
    assert opt_state["opt.t"] == 5 and serving_state["seen"] == 5
    live.close()

    again = _core(tmp_path / "live", make, every=4)  # checkpoint + log replay
    assert again.version == 5
    assert again.model.tobytes() == model.tobytes()
    assert again.serving_model.tobytes() == serving.tobytes()
    replayed = again.strategy.state_dict()
    assert replayed.keys() == opt_state.keys()
    for key, value in opt_state.items():
        if isinstance(value, np.ndarray):
            assert replayed[key].tobytes() == value.tobytes(), key
        else:
            assert replayed[key] == value, key
    assert again.serving.state_dict()["seen"] == 5
    # The serving model really differs from the iterate (the test would pass vacuously if not).
    assert again.serving_model.tobytes() != again.model.tobytes()

    # A log-only replay (no checkpoint at all) agrees too: replay is the same code path.
    fresh = _core(tmp_path / "fresh", make, every=10_000)
    for seq, d in enumerate(deltas, start=1):
        fresh.handle("dev-1", update_bytes(M, d, seq=seq, base=fresh.version))
    fresh.close()
    (tmp_path / "fresh" / "checkpoint.bin").unlink()
    log_only = _core(tmp_path / "fresh", make, every=10_000)
    assert log_only.model.tobytes() == model.tobytes()
    assert log_only.serving_model.tobytes() == serving.tobytes()
