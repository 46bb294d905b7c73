"""Hostile devices (fleet/attacks.py) in the simulator and the demo's compromised trainer.

Attackers must send what a hostile device could send: their updates are real ClientUpdate bytes
through the production codec and admission (the SimServer counts them as accepted), and a
defended server must end up better than an undefended one on the same fleet."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from agent.trainer import EvalResult, TrainConfig, TrainResult, never_stop
from fleet.attacks import (
    DEVICE_ATTACKS,
    Attack,
    AttackKind,
    apply_trigger,
    backdoor_test_set,
    choose_attackers,
)
from fleet.demo.hostile import HostileTrainer
from fleet.partition import digits_dataset, dirichlet_partition
from fleet.sim.engine import RunResult
from fleet.sim.profiles import FleetConfig, make_fleet
from fleet.sim.runner import Experiment, parse_strategy, run_one
from fleet.sim.server_side import SimServer
from protocol.errors import ConfigError
from server.robust import DEFENCES
from server.robust.norm_bound import initial_bound
from tests.unit.sim.fakes import MANIFEST, SoftmaxTrainer, initial_weights

DEVICES = 60


def test_choose_attackers_is_a_seeded_share() -> None:
    a = choose_attackers(1000, 0.2, seed=3)
    assert len(a) == 200 and a == choose_attackers(1000, 0.2, seed=3)
    assert a != choose_attackers(1000, 0.2, seed=4)
    assert choose_attackers(10, 0.0, 0) == frozenset()
    with pytest.raises(ValueError):
        choose_attackers(10, 1.0, 0)


def test_delta_attacks_hand_checked() -> None:
    d = np.array([3.0, -4.0], np.float32)  # norm 5
    np.testing.assert_array_equal(Attack(AttackKind.SIGN_FLIP).poison_delta(d, 0, 1), [-12, 16])
    np.testing.assert_array_equal(Attack(AttackKind.SCALE, boost=2).poison_delta(d, 0, 1), [6, -8])
    noisy = Attack(AttackKind.NOISE).poison_delta(d, 7, 1)
    assert float(np.linalg.norm(noisy)) == pytest.approx(250.0, rel=1e-5)  # 50 x 5
    np.testing.assert_array_equal(noisy, Attack(AttackKind.NOISE).poison_delta(d, 7, 1))
    assert not np.array_equal(noisy, Attack(AttackKind.NOISE).poison_delta(d, 7, 2))
    assert noisy.dtype == np.float32


def test_data_attacks_and_trigger() -> None:
    x = np.zeros((3, 64), np.float32)
    y = np.array([0, 3, 9])
    _, flipped = Attack(AttackKind.LABEL_FLIP).poison_data(x, y)
    assert flipped.tolist() == [9, 6, 0]
    bx, by = Attack(AttackKind.BACKDOOR, target=2).poison_data(x, y)
    assert bx.shape == (6, 64) and by.tolist() == [0, 3, 9, 2, 2, 2]
    lit = np.flatnonzero(apply_trigger(x)[0])
    assert lit.tolist() == [54, 55, 62, 63]  # bottom-right 2x2 of the 8x8 image
    assert apply_trigger(x.reshape(3, 1, 8, 8)).reshape(3, 64)[0].sum() == 4
    tx, ty = backdoor_test_set(x, y, target=3)
    assert len(tx) == 2 and ty.tolist() == [3, 3] and tx[:, 63].tolist() == [1, 1]


@cache
def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = digits_dataset(0)
    return d.x_train, d.y_train, d.x_test, d.y_test


def _run(
    attack: Attack | None,
    defence: str,
    *,
    fraction: float = 0.2,
    devices: int = DEVICES,
    strategy: str = "fedbuff:5:polynomial",
    concurrency: int = 13,
) -> tuple[RunResult, SimServer]:
    data = _data()
    exp = Experiment(
        concurrency=concurrency,
        duration_s=2 * 3600.0,
        eval_every_s=600.0,
        robust=DEFENCES[defence],
        attack=attack,
        attacker_fraction=fraction if attack else 0.0,
    )
    slices = dirichlet_partition(data[1], devices, alpha=0.5, seed=0, min_size=16)
    fleet = make_fleet(devices, FleetConfig(median_s_per_sample=2.0, start_hour=0.0), 7200, 0)
    return run_one(
        parse_strategy(strategy),
        exp,
        manifest=MANIFEST,
        initial=initial_weights(),
        fleet=fleet,
        slices=slices,
        data=data,
        trainer=SoftmaxTrainer(),
        seed=0,
    )


def test_sign_flip_attackers_go_through_admission_and_the_defence_holds() -> None:
    clean, _ = _run(None, "none")
    open_, server = _run(Attack(AttackKind.SIGN_FLIP), "none")
    defended, _ = _run(Attack(AttackKind.SIGN_FLIP), "default")
    assert open_.counts["hostile_updates"] > 20
    assert open_.accepted == server.accepted >= open_.counts["hostile_updates"]  # real updates
    assert open_.final_accuracy < clean.final_accuracy - 0.1  # the attack works undefended
    assert defended.final_accuracy > open_.final_accuracy + 0.1  # and the defence holds it


def _backdoor_run(defence: str) -> tuple[RunResult, float]:
    """100 devices, FedBuff K = 10, 10% of them backdooring (trigger -> class 0, boosted x5):
    the run and the backdoor's success on triggered test digits of the other classes."""
    attack = Attack(AttackKind.BACKDOOR)
    result, server = _run(
        attack, defence, fraction=0.1, devices=100, strategy="fedbuff:10:polynomial", concurrency=25
    )
    data = _data()
    return result, SoftmaxTrainer().accuracy(server.model, *backdoor_test_set(data[2], data[3], 0))


def test_sign_agreement_holds_back_a_backdoor_the_cosine_filter_lets_through() -> None:
    """The backdoor's updates look honest (they train on clean data too, and the norm bound and
    the cosine cut take their boost): only the coordinates they alone push give them away."""
    _, undefended = _backdoor_run("none")
    without_agreement, default = _backdoor_run("default")
    with_agreement, sign = _backdoor_run("sign")
    assert undefended > 0.9 and default > 0.9  # the attack works through the cosine filter
    assert with_agreement.counts["hostile_updates"] == without_agreement.counts["hostile_updates"]
    assert sign < default / 2  # and sign agreement holds most of it back
    assert with_agreement.final_accuracy > without_agreement.final_accuracy - 0.05


def test_fresh_poison_is_one_direction_of_norm_1e4_and_not_a_device_attack() -> None:
    d = np.array([3.0, -4.0, 0.0], np.float32)
    a = Attack(AttackKind.FRESH_POISON)
    sent = a.poison_delta(d, 0, 1)
    assert float(np.linalg.norm(sent)) == pytest.approx(1e4, rel=1e-5) and sent.dtype == np.float32
    np.testing.assert_array_equal(sent, a.poison_delta(d, 5, 9))  # coordinated: every device
    assert a.opening and AttackKind.FRESH_POISON not in DEVICE_ATTACKS
    assert not any(Attack(k).opening for k in DEVICE_ATTACKS)


def _fresh_run(defence: str) -> tuple[RunResult, SimServer]:
    data = _data()
    exp = Experiment(
        concurrency=13,
        duration_s=1800.0,
        eval_every_s=600.0,
        robust=DEFENCES[defence],
        attack=Attack(AttackKind.FRESH_POISON, first_updates=5),
    )
    slices = dirichlet_partition(data[1], DEVICES, alpha=0.5, seed=0, min_size=16)
    fleet = make_fleet(DEVICES, FleetConfig(median_s_per_sample=2.0, start_hour=0.0), 1800, 0)
    return run_one(
        parse_strategy("fedbuff:5:polynomial"),
        exp,
        manifest=MANIFEST,
        initial=initial_weights(),
        fleet=fleet,
        slices=slices,
        data=data,
        trainer=SoftmaxTrainer(),
        seed=0,
        record=True,
    )


def test_fresh_poison_sends_exactly_the_first_updates_of_the_run() -> None:
    result, server = _fresh_run("none")
    assert result.counts["hostile_updates"] == 5
    assert server.calls is not None
    applied = [c.update for c in server.calls if c.update is not None]
    norms = [u.norm() for u in applied]
    assert norms[:5] == pytest.approx([1e4] * 5, rel=1e-5)  # the first five accepted
    assert max(norms[5:]) < 100.0 and len(applied) > 20  # then honest devices only
    assert server.step_norms[0] == pytest.approx(1e4, rel=1e-3)  # one buffer of five: 1e4
    assert server.max_step_norm == server.step_norms[0]
    _, defended = _fresh_run("default")
    # the fresh-server bound (server/robust/norm_bound.py) clips each hostile update, so the
    # step made of them is at most that long
    bound = initial_bound(initial_weights())
    assert 0.0 < defended.step_norms[0] <= bound * (1 + 1e-5)


class _FakeTrainer:
    """A trainer whose training adds 1 to every weight and records the labels it saw."""

    name = "fake"
    manifest = MANIFEST

    def __init__(self) -> None:
        self.weights = np.zeros(MANIFEST.num_params, np.float32)
        self.labels: list[int] = []

    def set_weights(self, flat: np.ndarray) -> None:
        self.weights = flat.copy()

    def get_weights(self) -> np.ndarray:
        return self.weights.copy()

    def train(
        self,
        x: np.ndarray,
        y: np.ndarray,
        config: TrainConfig,
        should_stop: Callable[[], bool] = never_stop,
    ) -> TrainResult:
        self.labels = y.tolist()
        self.weights = self.weights + np.float32(1.0)
        return TrainResult(self.weights.copy(), 1, len(y), 0.1, False, 0.0)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> EvalResult:
        raise NotImplementedError


def test_demo_hostile_trainer_reports_the_poisoned_delta() -> None:
    inner = _FakeTrainer()
    hostile = HostileTrainer(inner, Attack(AttackKind.SIGN_FLIP), device=3)
    base = np.full(MANIFEST.num_params, 2.0, np.float32)
    hostile.set_weights(base)  # what the agent runtime does with the offered model
    result = hostile.train(np.zeros((2, 64), np.float32), np.array([1, 2]), TrainConfig())
    np.testing.assert_array_equal(result.weights - base, np.full_like(base, -4.0))  # -4 x (+1)
    flip = HostileTrainer(_FakeTrainer(), Attack(AttackKind.LABEL_FLIP), device=0)
    flip.set_weights(base)
    flip.train(np.zeros((2, 64), np.float32), np.array([1, 2]), TrainConfig())
    assert flip._inner.labels == [8, 7]


@pytest.mark.parametrize("module", ["fleet.sim.cli", "fleet.demo.cli"])
@pytest.mark.parametrize(
    "argv",
    [["--attackers", "0.2"], ["--attack", "noise"], ["--attackers", "1.0", "--attack", "scale"]],
)
def test_cli_attack_flags_are_checked(module: str, argv: list[str], tmp_path: Path) -> None:
    import argparse
    import importlib

    cli = importlib.import_module(module)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([*argv, "--out", str(tmp_path / "out")])
    with pytest.raises(ConfigError, match="--attack"):
        cli.run(args)
