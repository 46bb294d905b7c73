"""Server optimisers against hand-computed steps; schedules; config; FedBuff/FedAvg wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protocol.errors import ConfigError
from server.optimizers import (
    LrSchedule,
    OptimizerName,
    ScheduleName,
    ServerOptimizer,
    make_optimizer,
)
from server.strategies import AdmittedUpdate, FedAvg, FedBuff, make_strategy


def f32(*xs: float) -> np.ndarray:
    return np.array(xs, np.float32)


def upd(delta: list[float], base: int = 0, n: int = 1, seq: int = 1) -> AdmittedUpdate:
    return AdmittedUpdate("d", seq, base, n, np.array(delta, np.float32))


def test_sgd_hand_computed() -> None:
    opt = ServerOptimizer(OptimizerName.SGD, lr=0.5)
    x = opt.step(f32(1, 1), f32(2, -4))  # 1 + 0.5 * 2, 1 - 0.5 * 4
    np.testing.assert_array_equal(x, f32(2, -1))
    assert x.dtype == np.float32 and opt.steps == 1


def test_avgm_hand_computed() -> None:
    opt = ServerOptimizer(OptimizerName.AVGM, lr=0.5, beta1=0.5)
    x = opt.step(f32(0), f32(2))  # m = 2, x = 0 + 0.5 * 2 = 1
    np.testing.assert_array_equal(x, f32(1))
    x = opt.step(x, f32(2))  # m = 0.5 * 2 + 2 = 3, x = 1 + 1.5 = 2.5
    np.testing.assert_array_equal(x, f32(2.5))


def test_adagrad_hand_computed() -> None:
    opt = ServerOptimizer(OptimizerName.ADAGRAD, lr=1.0, beta1=0.5, tau=1.0)
    x = opt.step(f32(0), f32(2))  # m = 0.5*2 = 1; v = tau^2 + 4 = 5; x = 1 / (sqrt 5 + 1)
    np.testing.assert_allclose(x, [1 / (math.sqrt(5) + 1)], rtol=1e-6)
    x2 = opt.step(x, f32(-1))  # m = 0.5 - 0.5 = 0; v = 6; x unchanged
    np.testing.assert_allclose(x2, x, rtol=1e-6)
    x3 = opt.step(x2, f32(-1))  # m = 0 - 0.5 = -0.5; v = 7
    np.testing.assert_allclose(x3, x2 - 0.5 / (math.sqrt(7) + 1), rtol=1e-6)


def test_adam_hand_computed() -> None:
    opt = ServerOptimizer(OptimizerName.ADAM, lr=0.1, beta1=0.5, beta2=0.75, tau=1.0)
    x = opt.step(f32(0, 0), f32(2, 0))
    # m = [1, 0]; v = 0.75 * 1 + 0.25 * [4, 0] = [1.75, 0.75]; x = 0.1 * m / (sqrt v + 1)
    np.testing.assert_allclose(x, [0.1 / (math.sqrt(1.75) + 1), 0.0], rtol=1e-6)
    x = opt.step(x, f32(-2, 0))
    # m = 0.5 - 1 = -0.5; v = 0.75 * 1.75 + 1 = 2.3125
    expected = 0.1 / (math.sqrt(1.75) + 1) - 0.05 / (math.sqrt(2.3125) + 1)
    np.testing.assert_allclose(x, [expected, 0.0], rtol=1e-6, atol=1e-9)


def test_yogi_hand_computed_and_differs_from_adam() -> None:
    opt = ServerOptimizer(OptimizerName.YOGI, lr=1.0, beta1=0.5, beta2=0.75, tau=1.0)
    x = opt.step(f32(0), f32(2))
    # v = 1 - 0.25 * 4 * sign(1 - 4) = 2 (Adam: 1.75); m = 1; x = 1 / (sqrt 2 + 1)
    np.testing.assert_allclose(x, [1 / (math.sqrt(2) + 1)], rtol=1e-6)
    x2 = opt.step(x, f32(1))
    # v = 2 - 0.25 * 1 * sign(2 - 1) = 1.75; m = 0.5 + 0.5 = 1
    np.testing.assert_allclose(x2, x + 1 / (math.sqrt(1.75) + 1), rtol=1e-6)
    state = opt.state_dict()
    np.testing.assert_allclose(state["opt.v"], [1.75], rtol=1e-7)
    assert state["opt.t"] == 2


def test_adaptive_step_is_bounded_by_lr_over_tau_not_by_g() -> None:
    # The point of the adaptive rules: a tiny pseudo-gradient still moves the model about lr.
    opt = ServerOptimizer(OptimizerName.ADAM, lr=0.01, beta1=0.0, beta2=0.0, tau=1e-6)
    x = opt.step(f32(0), f32(1e-4))  # m = g, v = g^2: step = lr * g / (|g| + tau) ~ lr
    np.testing.assert_allclose(x, [0.01], rtol=1e-2)


@pytest.mark.parametrize(
    ("schedule", "steps", "factors"),
    [
        (LrSchedule(), [1, 50], [1.0, 1.0]),
        (LrSchedule(ScheduleName.STEP, every=2, gamma=0.5), [1, 2, 3, 5], [1, 1, 0.5, 0.25]),
        (LrSchedule(ScheduleName.COSINE, total_steps=4), [2, 4, 9], [0.5, 0.0, 0.0]),
        (LrSchedule(ScheduleName.COSINE, total_steps=4, min_factor=0.2), [4], [0.2]),
        (LrSchedule(ScheduleName.INVERSE_SQRT, every=1), [1, 4], [1.0, 0.5]),
        (LrSchedule(warmup_steps=4), [1, 2, 4, 9], [0.25, 0.5, 1.0, 1.0]),
    ],
)
def test_schedule_factors(schedule: LrSchedule, steps: list[int], factors: list[float]) -> None:
    assert [schedule.factor(t) for t in steps] == pytest.approx(factors, abs=1e-12)


def test_schedule_drives_the_step() -> None:
    opt = ServerOptimizer(lr=1.0, schedule=LrSchedule(ScheduleName.STEP, every=1, gamma=0.5))
    x = opt.step(f32(0), f32(1))  # lr 1
    x = opt.step(x, f32(1))  # lr 0.5
    assert opt.current_lr() == 0.25
    np.testing.assert_array_equal(x, f32(1.5))


def test_state_round_trip_continues_identically() -> None:
    a = ServerOptimizer(OptimizerName.YOGI, lr=0.1)
    rng = np.random.default_rng(0)
    gs = [rng.normal(size=5).astype(np.float32) for _ in range(6)]
    x = np.zeros(5, np.float32)
    for g in gs[:3]:
        x = a.step(x, g)
    b = ServerOptimizer(OptimizerName.YOGI, lr=0.1)
    b.load_state_dict(a.state_dict())
    xa, xb = x, x.copy()
    for g in gs[3:]:
        xa, xb = a.step(xa, g), b.step(xb, g)
    assert xa.tobytes() == xb.tobytes()


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="beta1"):
        ServerOptimizer(OptimizerName.ADAM, beta1=1.0)
    with pytest.raises(ValueError, match="lr"):
        ServerOptimizer(lr=0.0)
    with pytest.raises(ValueError, match="keeps no v"):
        ServerOptimizer(OptimizerName.SGD).load_state_dict({"opt.v": f32(1)})
    with pytest.raises(ValueError, match=r"opt\.t"):
        ServerOptimizer().load_state_dict({"opt.t": -1})


# --- config and the strategies -----------------------------------------------------------


def test_make_optimizer_from_config_tables() -> None:
    opt = make_optimizer(
        {"name": "adam", "beta2": 0.999, "tau": 0.01},
        lr=0.03,
        schedule={"name": "cosine", "total_steps": 10, "warmup_steps": 2},
    )
    assert opt.name is OptimizerName.ADAM and opt.lr == 0.03 and opt.beta2 == 0.999
    assert opt.schedule.name is ScheduleName.COSINE and opt.current_lr() == pytest.approx(
        0.015 * (0.5 + 0.5 * math.cos(math.pi / 10))
    )


def test_legacy_momentum_is_avgm() -> None:
    opt = make_optimizer(None, lr=2.0, momentum=0.9)
    assert opt.name is OptimizerName.AVGM and opt.beta1 == 0.9 and opt.lr == 2.0
    with pytest.raises(ValueError, match=r"optimizer\.beta1"):
        make_optimizer("adam", momentum=0.9)


def test_make_strategy_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"optimizer\.name"):
        make_strategy("fedbuff", {"optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match=r"optimizer\.gamma"):
        make_strategy("fedbuff", {"optimizer": {"name": "adam", "gamma": 1}})
    with pytest.raises(ConfigError, match=r"lr_schedule\.name"):
        make_strategy("fedavg", {"lr_schedule": {"name": "linear"}})
    with pytest.raises(ConfigError, match="momentum"):
        make_strategy("fedbuff", {"optimizer": "yogi", "momentum": 0.5})


def test_fedbuff_with_adam_hand_computed() -> None:
    s = make_strategy(
        "fedbuff",
        {"buffer_size": 2, "server_lr": 0.1, "optimizer": {"name": "adam", "beta1": 0.5,
                                                           "beta2": 0.75, "tau": 1.0}},
    )  # fmt: skip
    assert isinstance(s, FedBuff)
    s.apply(f32(0), 0, upd([1]))
    r = s.apply(f32(0), 0, upd([3], seq=2))  # g = 2: the Adam step of test_adam_hand_computed
    assert r.stepped
    np.testing.assert_allclose(r.model, [0.1 / (math.sqrt(1.75) + 1)], rtol=1e-6)
    state = s.state_dict()
    assert state["opt.t"] == 1 and "opt.m" in state and "opt.v" in state


def test_fedbuff_legacy_momentum_bit_for_bit_and_old_checkpoint_key() -> None:
    new = FedBuff(buffer_size=1, server_lr=0.7, momentum=0.9)
    x_new = np.zeros(3, np.float32)
    v = np.zeros(3, np.float32)
    x_old = np.zeros(3, np.float32)
    rng = np.random.default_rng(1)
    for i in range(5):
        d = rng.normal(size=3).astype(np.float32)
        x_new = new.apply(x_new, i, upd(d.tolist(), base=i, seq=i + 1)).model
        v = np.float32(0.9) * v + d  # the pre-optimizer FedBuff code, verbatim
        x_old = x_old + np.float32(0.7) * v
    assert x_new.tobytes() == x_old.tobytes()
    restored = FedBuff(buffer_size=1, server_lr=0.7, momentum=0.9)
    restored.load_state_dict({"weight": 0.0, "count": 0, "velocity": v})  # an old checkpoint
    np.testing.assert_array_equal(restored.state_dict()["opt.m"], v)


def test_fedavg_default_is_plain_mean_and_takes_an_optimizer() -> None:
    plain = FedAvg(round_size=2)
    plain.apply(f32(1), 0, upd([1], n=1))
    r = plain.apply(f32(1), 0, upd([4], n=3, seq=2))  # mean (1 + 12) / 4 = 3.25
    np.testing.assert_array_equal(r.model, f32(4.25))
    avgm = make_strategy("fedavg", {"round_size": 1, "optimizer": {"name": "avgm", "beta1": 0.5}})
    x = avgm.apply(f32(0), 0, upd([2])).model  # m = 2
    x = avgm.apply(x, 1, upd([2], base=1, seq=2)).model  # m = 3 -> 5
    np.testing.assert_array_equal(x, f32(5))
    assert avgm.state_dict()["opt.t"] == 2


def test_optimizer_with_server_lr_shorthand_conflict() -> None:
    with pytest.raises(ValueError, match="not server_lr"):
        FedBuff(server_lr=0.5, optimizer=ServerOptimizer())
